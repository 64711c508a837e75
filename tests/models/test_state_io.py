"""Session state as bytes (``models/state_file.py``) and each model's state through it: a
stream checkpointed after frame k and restored elsewhere goes on as if uninterrupted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.rife.inference import PreparedFrame, RifeEngines, pair_steps, prepare
from models.rife.spec import get_spec
from models.rife.state_io import frame_from_tensors, frame_tensors
from models.runtime import Runner
from models.state_file import StateFileError, pack, read_header, unpack
from models.steps import run_steps
from models.videomae.export import eager_engines as eager_vit_engines
from models.videomae.inference import ClipState, WindowSpec, frame_steps
from models.videomae.inference import execute as vit_execute
from models.videomae.state_io import clip_from_tensors, clip_tensors
from models.xmem.config import XMemConfig
from models.xmem.inference_core import InferenceCore, XMemState
from models.xmem.state_io import state_from_tensors, state_tensors
from tests.models.rife_engines import hashed_ifnet, make_runner
from tests.models.test_videomae_stream import clip_frames
from tests.models.test_videomae_stream import net as vit_net
from tests.models.xmem_support import TINY_SIZE, square_mask, tiny_frames, xmem_engines
from tests.server.support import panning_frames


class CountingRunner:
    """A real runner, counting the rows (frames) it is given."""

    def __init__(self, runner: Runner) -> None:
        self.runner, self.rows, self.kind = runner, 0, runner.kind

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.rows += int(inputs[0].shape[0])
        return self.runner(*inputs)


# --- the file format ------------------------------------------------------------------------


def test_a_state_round_trips_with_its_header_and_dtypes() -> None:
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.uint8), "c": torch.tensor(2.5)}
    blob = pack(tensors, {"task": "segment", "model": "xmem"})
    back, header = unpack(blob)
    assert header["task"] == "segment" and header["model"] == "xmem" and header["version"] == 1
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)


def test_a_flipped_byte_is_refused_as_corrupt() -> None:
    blob = bytearray(pack({"a": torch.randn(64)}, {}))
    blob[-5] ^= 0x10
    with pytest.raises(StateFileError, match="do not match their sha256"):
        unpack(bytes(blob))


@pytest.mark.parametrize("cut", [3, 40, -7])
def test_a_cut_state_is_refused(cut: int) -> None:
    blob = pack({"a": torch.randn(64)}, {})
    with pytest.raises(StateFileError):
        unpack(blob[:cut])


def test_another_version_or_format_is_refused_by_name() -> None:
    from safetensors.torch import save

    newer = save(
        {"a": torch.zeros(1)}, metadata={"vidserve": '{"format": "vidserve-session-state", "version": 9}'}
    )
    with pytest.raises(StateFileError, match="version 9; this server reads version 1"):
        read_header(newer)
    other = save({"a": torch.zeros(1)}, metadata={"other": "x"})
    with pytest.raises(StateFileError, match="not a vidserve session state"):
        read_header(other)


# --- XMem: memories, objects and counters --------------------------------------------------

# why this small: every memory path runs within 24 frames of 16×16 — consolidation into
# long-term memory, long-term removal, a second object group and an object's removal
SMALL = XMemConfig(
    mem_every=2, min_mid_term_frames=2, max_mid_term_frames=4, num_prototypes=2, max_long_term_elements=3
)


def _round_trip(state: XMemState) -> XMemState:
    tensors, fields = state_tensors(state)
    back, header = unpack(pack(tensors, {"xmem": fields}))
    return state_from_tensors(back, header["xmem"])


def _drive(core: InferenceCore, t: int, frame: torch.Tensor | object) -> torch.Tensor:
    if t == 0:
        first = square_mask(TINY_SIZE, 1, 0, 0) + square_mask(TINY_SIZE, 2, 8, 8)
        return core.step(frame, first).prob  # type: ignore[arg-type]
    if t == 9:
        return core.step(frame, square_mask(TINY_SIZE, 3, 0, 8), objects=[3]).prob  # type: ignore[arg-type]
    if t == 15:
        core.remove_object(1)
    return core.step(frame).prob  # type: ignore[arg-type]


@pytest.mark.parametrize("checkpoint_after", [0, 6, 12, 17])
def test_xmem_restored_after_frame_k_continues_exactly(
    checkpoint_after: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    engines = xmem_engines("eager", tmp_path_factory)
    frames = tiny_frames(24, TINY_SIZE)
    whole, resumed = InferenceCore(engines, SMALL), InferenceCore(engines, SMALL)
    for t, frame in enumerate(frames[: checkpoint_after + 1]):
        _drive(whole, t, frame)
    resumed.state = _round_trip(whole.state)
    assert resumed.state.frame_index == checkpoint_after
    for t in range(checkpoint_after + 1, len(frames)):
        expected, got = _drive(whole, t, frames[t]), _drive(resumed, t, frames[t])
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), f"frame {t}"
    memory = whole.state.memory
    assert memory.consolidations > 0 and memory.long_term_removals > 0  # every path ran
    assert resumed.state.memory.long_term_removals == memory.long_term_removals


def test_a_fresh_xmem_state_round_trips() -> None:
    state = XMemState.fresh(XMemConfig())
    back = _round_trip(state)
    assert back.frame_index == -1 and back.hidden is None and back.config == state.config


def test_xmem_state_with_disagreeing_rows_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), SMALL)
    for t, frame in enumerate(tiny_frames(3, TINY_SIZE)):
        _drive(core, t, frame)
    tensors, fields = state_tensors(core.state)
    tensors = {**tensors, "work.use_count": tensors["work.use_count"][:-1]}
    with pytest.raises(ValueError, match="disagree on the element count"):
        state_from_tensors(tensors, fields)


# --- RIFE: the kept frame and its features --------------------------------------------------


def test_rife_kept_frame_restored_gives_the_same_next_pair_without_encoding_it_again(tmp_path: Path) -> None:
    """4.26 encodes each frame once and keeps its features for the next pair: the frame kept
    after frame 1, restored, makes pair (1, 2) exactly as the live one does, and only frame 2
    is encoded."""
    net = hashed_ifnet("4.26")
    spec = get_spec("4.26")
    encoder = CountingRunner(make_runner(net, "eager", tmp_path, part="encoder"))
    engines = RifeEngines(spec, make_runner(net, "eager", tmp_path, part="flow"), encoder)
    f0, f1, f2 = (prepare(spec, frame, 1.0) for frame in panning_frames(3))

    def pair(a: PreparedFrame, b: PreparedFrame) -> list[torch.Tensor]:
        steps = pair_steps(spec, a, b, [0.5], encodes=True, scene_change_threshold=None)
        return [between.frame for between in run_steps(steps, engines.execute)]

    pair(f0, f1)
    tensors, fields = frame_tensors(f1)
    back, header = unpack(pack(tensors, {"previous": fields}))
    kept = frame_from_tensors(back, header["previous"])
    assert kept.features is not None and np.array_equal(kept.pixels, f1.pixels)
    encoder.rows = 0
    restored = pair(kept, prepare(spec, f2.pixels, 1.0))
    assert encoder.rows == 1  # frame 2 only
    live = pair(f1, f2)
    assert torch.equal(restored[0], live[0])


# --- VideoMAE: the ring of tubelet tokens ---------------------------------------------------


@pytest.mark.parametrize("checkpoint_after", [4, 9, 13])
def test_a_token_ring_restored_after_frame_k_gives_the_same_windows(checkpoint_after: int) -> None:
    """Overlapping windows over 21 frames, the stream checkpointed mid-window (a sampled frame
    waiting for its pair, a part-filled ring) and restored: every later window is the same."""
    spec = WindowSpec(frames_per_clip=6, sampling_rate=2, stride=4, keep_ratio=0.5, drop="static", size=112)
    frames = clip_frames(21)
    config, engines = vit_net().config, eager_vit_engines(vit_net())

    def run(state: ClipState, start: int, stop: int) -> list[np.ndarray]:
        out = []
        for index in range(start, stop):
            window = run_steps(
                frame_steps(config, state, frames[index], index, index / 30),
                lambda rows: vit_execute(engines, rows),
            )
            if window is not None:
                out.append(window.embedding)
        return out

    whole = ClipState(spec)
    expected = run(whole, 0, len(frames))
    live = ClipState(spec)
    before = run(live, 0, checkpoint_after + 1)
    tensors, fields = clip_tensors(live)
    back, header = unpack(pack(tensors, {"clip": fields}))
    restored = clip_from_tensors(back, header["clip"])
    after = run(restored, checkpoint_after + 1, len(frames))
    assert len(before + after) == len(expected) == 3
    for got, want in zip(before + after, expected, strict=True):
        assert np.array_equal(got, want)
