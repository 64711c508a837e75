"""XMem is XMem over whole streams: every frame of the recorded streams, the memory sizes,
and memory that stays bounded over thousands of frames with objects coming and going."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.runtime import EngineKind
from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines
from models.xmem.inference_core import InferenceCore, SegmentationInputError
from tests.models.xmem_support import xmem_engine_params, xmem_engines

# why: the conformance README's bound for stream probabilities on float32 engines
STREAM_TOLERANCE = 1e-3


def _run_stream(core: InferenceCore, xmem_vectors: Any, name: str, info: dict[str, Any]) -> list[str]:
    frames, masks = xmem_vectors[f"{name}/frames_u8"], xmem_vectors[f"{name}/masks_u8"]
    failures = []
    for t in range(info["frames"]):
        prompt = info["prompts"].get(str(t))
        result = core.step(frames[t], masks[t], objects=prompt) if prompt else core.step(frames[t])
        expected = xmem_vectors[f"{name}/prob_{t:03d}"]
        if result.prob.shape != expected.shape:
            failures.append(f"{name} frame {t}: shape {tuple(result.prob.shape)} != {expected.shape}")
            continue
        error = float(np.abs(result.prob.numpy() - expected).max())
        if error > STREAM_TOLERANCE:
            failures.append(f"{name} frame {t}: max abs {error:.2e}")
    return failures


@pytest.mark.parametrize("engine", xmem_engine_params())
@pytest.mark.parametrize("name", ["seq_a", "seq_b", "seq_c"])
def test_stream_conformance(
    engine: EngineKind,
    name: str,
    xmem_vectors: Any,
    xmem_spec: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    engines = xmem_engines(engine, tmp_path_factory)
    info = xmem_spec["sequences"][name]
    core = InferenceCore(engines, XMemConfig.from_dict(xmem_spec["config"]))
    failures = _run_stream(core, xmem_vectors, name, info)
    assert not failures, "; ".join(failures[:8])
    memory = core.state.memory
    assert memory.work.size == info["final_work_mem_elements"]
    assert memory.long.size == info["final_long_mem_elements"]
    assert memory.long_term_removals == info["long_term_removals"]


def _tiny_frames(count: int, size: int = 16) -> list[np.ndarray]:
    """A moving bright square on a textured background: cheap, deterministic, not constant."""
    gen = np.random.default_rng(0)
    base = gen.integers(0, 256, (size, size, 3), dtype=np.uint8)
    frames = []
    for t in range(count):
        frame = np.roll(base, t % size, axis=1).copy()
        y = (t * 3) % (size - 8)
        frame[y : y + 8, 4:12] = 255
        frames.append(frame)
    return frames


def _square_mask(size: int, obj: int, top: int, left: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + 8, left : left + 8] = obj
    return mask


def test_memory_stays_bounded_over_3000_frames(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Objects 1, 2 from frame 0, object 3 added at frame 700 (a new group), object 1 removed
    at frame 1500: long-term removal must keep working across groups (XMem issue 43).

    16×16 frames are one memory element each, so small caps make working memory consolidate
    every 4 frames and long-term memory drop elements at nearly every consolidation."""
    config = XMemConfig(mem_every=2, min_mid_term_frames=2, max_mid_term_frames=4, num_prototypes=6)
    config = config.replace(max_long_term_elements=40)
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), config)
    size = 16
    per_frame = (size // 16) ** 2
    work_cap = config.max_mid_term_frames * per_frame
    first = _square_mask(size, 1, 0, 0) + _square_mask(size, 2, 8, 8)
    peak_work = peak_long = 0
    for t, frame in enumerate(_tiny_frames(3000, size)):
        if t == 0:
            result = core.step(frame, first)
        elif t == 700:
            result = core.step(frame, _square_mask(size, 3, 0, 8), objects=[3])
        else:
            if t == 1500:
                core.remove_object(1)
            result = core.step(frame)
        peak_work = max(peak_work, core.state.memory.work.size)
        peak_long = max(peak_long, core.state.memory.long.size)
        assert torch.isfinite(result.prob).all()
    memory = core.state.memory
    assert result.object_ids == [2, 3]
    assert peak_work <= work_cap
    assert peak_long <= config.max_long_term_elements
    assert memory.long_term_removals > 100, "removal kept running after object 3's group arrived"
    assert memory.consolidations > 300
    assert [len(g) for g in memory.groups] == [1, 1]


def test_top_k_larger_than_memory_clamps(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One 16×16 frame is a single memory element; top_k 30 must not crash."""
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), XMemConfig(top_k=30))
    frames = _tiny_frames(3, 16)
    core.step(frames[0], _square_mask(16, 1, 4, 4))
    result = core.step(frames[1])
    assert result.object_ids == [1] and result.prob.shape == (2, 16, 16)


def test_removed_object_frees_its_memory(tmp_path_factory: pytest.TempPathFactory) -> None:
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), XMemConfig(mem_every=1))
    frames = _tiny_frames(4, 32)
    core.step(frames[0], _square_mask(32, 4, 0, 0) + _square_mask(32, 9, 16, 16))
    core.step(frames[1])
    before = core.state.memory.nbytes()["working"]
    core.remove_object(4)
    assert core.state.memory.nbytes()["working"] < before
    assert core.state.hidden is not None and core.state.hidden.shape[0] == 1
    result = core.step(frames[2])
    assert result.object_ids == [9] and result.prob.shape[0] == 2
    with pytest.raises(SegmentationInputError, match="unknown object id 4"):
        core.remove_object(4)


def test_bad_inputs_are_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    engines: XMemEngines = xmem_engines("eager", tmp_path_factory)
    core = InferenceCore(engines)
    frame = _tiny_frames(1, 32)[0]
    with pytest.raises(SegmentationInputError, match="mask size"):
        core.step(frame, np.zeros((16, 16), np.uint8))
    core.step(frame, _square_mask(32, 1, 0, 0))
    with pytest.raises(SegmentationInputError, match="differs from the video"):
        core.step(np.zeros((48, 32, 3), np.uint8))
    with pytest.raises(SegmentationInputError, match="uint8"):
        core.step(frame.astype(np.float32))


def test_deep_update_every_n_frames_lands_on_memory_frames(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Out of sync (deep_update_every 7, mem_every 2), as in the reference the deep update
    happens on the first memory frame at least 7 frames after the last one: 0, 8, 16."""
    core = InferenceCore(
        xmem_engines("eager", tmp_path_factory), XMemConfig(mem_every=2, deep_update_every=7)
    )
    frames = _tiny_frames(18, 32)
    deep_updates = []
    for t, frame in enumerate(frames):
        result = core.step(frame, _square_mask(32, 1, 0, 0)) if t == 0 else core.step(frame)
        assert result.is_memory_frame == (t % 2 == 0)
        if core.state.last_deep_update == t:
            deep_updates.append(t)
    assert deep_updates == [0, 8, 16]


def test_ids_neither_tracked_nor_given_are_unlabelled(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A mask that sets object 1 and also holds pixels of id 7 (not tracked, not given):
    as the reference builds its one-hot over tracked and given ids only, id 7's pixels are
    unlabelled, so object 2 keeps its prediction there: the same answer as the mask with
    those pixels 0 (once, every non-zero pixel cleared the other objects' predictions)."""
    engines = xmem_engines("eager", tmp_path_factory)
    frames = _tiny_frames(3, 32)
    first = _square_mask(32, 1, 0, 0) + _square_mask(32, 2, 16, 16)
    later = _square_mask(32, 1, 2, 2)
    with_stray = later.copy()
    with_stray[16:32, 16:32] = 7  # over object 2
    answers = []
    for mask in (with_stray, later):
        core = InferenceCore(engines, XMemConfig())
        core.step(frames[0], first)
        core.step(frames[1])
        answers.append(core.step(frames[2], mask, objects=[1]))
    stray, clean = answers
    assert stray.object_ids == clean.object_ids == [1, 2]
    torch.testing.assert_close(stray.prob, clean.prob)
