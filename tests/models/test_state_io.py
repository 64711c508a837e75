"""Session state as bytes (``models/state_file.py``) and each model's state through it: a
stream checkpointed after frame k and restored elsewhere goes on as if uninterrupted."""

from __future__ import annotations

import pytest
import torch

from models.state_file import StateFileError, pack, read_header, unpack
from models.xmem.config import XMemConfig
from models.xmem.inference_core import InferenceCore, XMemState
from models.xmem.state_io import state_from_tensors, state_tensors
from tests.models.xmem_support import TINY_SIZE, square_mask, tiny_frames, xmem_engines

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
