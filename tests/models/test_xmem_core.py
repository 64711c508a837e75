"""XMem is XMem over whole streams: every frame of the recorded streams, the memory sizes,
and memory that stays bounded with objects coming and going (bench/xmem_bound.py runs the
same stream over thousands of frames)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.runtime import EngineKind
from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines
from models.xmem.inference_core import InferenceCore, SegmentationInputError
from models.xmem.memory_manager import memory_bound_bytes
from tests.models.xmem_support import (
    TINY_SIZE,
    ObjectsPlan,
    run_objects_stream,
    square_mask,
    tiny_frames,
    xmem_engine_params,
    xmem_engines,
)

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


def test_memory_stays_bounded_with_objects_coming_and_going(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Objects 1, 2 from frame 0, object 3 added at frame 40 (a new group), object 1 removed
    at frame 80: both memories stay at their caps, and long-term removal keeps working across
    groups of different lengths (XMem issue 43). ``bench/xmem_bound.py`` runs 3000 frames.

    16×16 frames are one memory element each, and caps this small make working memory
    consolidate on every memory frame (every 2nd) and long-term memory drop an element at
    every consolidation once it is full (after about 6)."""
    config = XMemConfig(
        mem_every=2, min_mid_term_frames=2, max_mid_term_frames=3, num_prototypes=1, max_long_term_elements=6
    )
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), config)
    plan = ObjectsPlan(frames=120, add_at=40, remove_at=80)
    log = run_objects_stream(core, plan)
    memory = core.state.memory
    assert log.all_finite and log.object_ids == [2, 3]
    # consolidation runs as working memory reaches T_max: after a step it holds T_min frames
    assert config.min_mid_term_frames <= log.peak_work < config.max_mid_term_frames
    long_cap = config.max_long_term_elements
    assert long_cap - config.num_prototypes < log.peak_long <= long_cap
    assert log.peak_bytes <= memory_bound_bytes(config, (TINY_SIZE, TINY_SIZE), objects=3)
    assert memory.consolidations >= 55
    assert log.removals_before_add >= 10, "removal ran with one group"
    assert log.removals_before_remove - log.removals_before_add >= 15, "and kept running with two"
    assert memory.long_term_removals - log.removals_before_remove >= 15, "and after object 1 went"
    assert log.uneven_removals >= 30, "removal ran while the groups' lengths differed"
    assert [len(g) for g in memory.groups] == [1, 1] and memory.long.num_groups == 2


def test_top_k_larger_than_memory_clamps(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One 16×16 frame is a single memory element; top_k 30 must not crash."""
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), XMemConfig(top_k=30))
    frames = tiny_frames(3, 16)
    core.step(frames[0], square_mask(16, 1, 4, 4))
    result = core.step(frames[1])
    assert result.object_ids == [1] and result.prob.shape == (2, 16, 16)


def test_removed_object_frees_its_memory(tmp_path_factory: pytest.TempPathFactory) -> None:
    core = InferenceCore(xmem_engines("eager", tmp_path_factory), XMemConfig(mem_every=1))
    frames = tiny_frames(4, 32)
    core.step(frames[0], square_mask(32, 4, 0, 0) + square_mask(32, 9, 16, 16))
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
    frame = tiny_frames(1, 32)[0]
    with pytest.raises(SegmentationInputError, match="mask size"):
        core.step(frame, np.zeros((16, 16), np.uint8))
    core.step(frame, square_mask(32, 1, 0, 0))
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
    frames = tiny_frames(18, 32)
    deep_updates = []
    for t, frame in enumerate(frames):
        result = core.step(frame, square_mask(32, 1, 0, 0)) if t == 0 else core.step(frame)
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
    frames = tiny_frames(3, 32)
    first = square_mask(32, 1, 0, 0) + square_mask(32, 2, 16, 16)
    later = square_mask(32, 1, 2, 2)
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
