"""Several videos stepped together equal each video stepped alone, with one call of each
engine per step, whatever their object counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.runtime import Runner
from models.xmem.batch import step_batch
from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines, eager_engines
from models.xmem.inference_core import InferenceCore, SegmentationInputError, XMemState
from tests.models.xmem_support import hashed_xmem

CONFIG = XMemConfig(
    mem_every=2,
    top_k=8,
    min_mid_term_frames=2,
    max_mid_term_frames=4,
    num_prototypes=6,
    max_long_term_elements=40,
)


class CountingRunner:
    """Counts calls to a real runner (the engine still runs)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.kind = runner.kind
        self.calls = 0

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        return self.runner(*inputs)


def counted(engines: XMemEngines) -> XMemEngines:
    return dataclasses.replace(
        engines,
        encode_key=CountingRunner(engines.encode_key),
        encode_value=CountingRunner(engines.encode_value),
        segment=CountingRunner(engines.segment),
    )


def calls(engines: XMemEngines) -> tuple[int, int, int]:
    runners = (engines.encode_key, engines.encode_value, engines.segment)
    return tuple(r.calls for r in runners if isinstance(r, CountingRunner))  # type: ignore[return-value]


def clip(seed: int, frames: int = 6, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """A frame moving a little each step, so memory reads something meaningful."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height + frames * 2, width + frames * 2, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[i * 2 : i * 2 + height, i : i + width]) for i in range(frames)]


def first_mask(objects: int, height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for obj in range(1, objects + 1):
        mask[(obj - 1) * 10 : (obj - 1) * 10 + 8, obj * 8 : obj * 8 + 12] = obj
    return mask


@pytest.fixture(scope="module")
def engines() -> XMemEngines:
    return eager_engines(hashed_xmem())


def test_batched_videos_equal_videos_alone(engines: XMemEngines) -> None:
    objects = [1, 3, 2]  # different object counts share the calls
    clips = [clip(seed) for seed in range(3)]
    alone = []
    for clip_frames, n in zip(clips, objects, strict=True):
        core = InferenceCore(engines, CONFIG)
        alone.append([core.step(f, first_mask(n) if i == 0 else None) for i, f in enumerate(clip_frames)])

    shared = counted(engines)
    cores = [InferenceCore(shared, CONFIG) for _ in clips]
    for i in range(len(clips[0])):
        before = calls(shared)
        works = [
            core.begin(c[i], first_mask(n) if i == 0 else None)
            for core, c, n in zip(cores, clips, objects, strict=True)
        ]
        results = [core.adopt(r) for core, r in zip(cores, step_batch(shared, works), strict=True)]
        key, value, segment = (a - b for a, b in zip(calls(shared), before, strict=True))
        assert key == 1 and segment == (0 if i == 0 else 1) and value <= 1
        for video, result in enumerate(results):
            want = alone[video][i]
            assert result.object_ids == want.object_ids
            torch.testing.assert_close(result.prob, want.prob, atol=1e-5, rtol=0)


def test_one_frame_per_video_per_batch(engines: XMemEngines) -> None:
    core = InferenceCore(engines, CONFIG)
    frames = clip(0, frames=2)
    works = [core.begin(frames[0], first_mask(1)), core.begin(frames[1])]
    with pytest.raises(SegmentationInputError, match="at most one frame"):
        step_batch(engines, works)


class OneFrameOnly:
    """The real runner, except that a call with more than one frame raises, as a batch too big
    for the device would: injected into encode_value, it fails a batch after Segment has
    already given every video its new sensory memory."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.kind = runner.kind

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if inputs[0].shape[0] > 1:  # image F×3×H×W
            raise RuntimeError("injected: batch too large")
        return self.runner(*inputs)


def marks(core: InferenceCore) -> tuple[int, int, int, int]:
    """What a step changes: the frame counter, the sensory memory (which tensor), the memory sizes."""
    return marks_of(core.state)


def marks_of(s: XMemState) -> tuple[int, int, int, int]:
    return s.frame_index, id(s.hidden), s.memory.work.size, s.memory.long.size


def test_a_failed_batch_leaves_every_video_as_it_was(engines: XMemEngines) -> None:
    objects = [1, 2, 1]
    clips = [clip(seed, frames=9) for seed in range(3)]
    alone, solo = [], []
    for clip_frames, n in zip(clips, objects, strict=True):
        core = InferenceCore(engines, CONFIG)
        alone.append([core.step(f, first_mask(n) if i == 0 else None) for i, f in enumerate(clip_frames)])
        solo.append(core)

    failing = dataclasses.replace(engines, encode_value=OneFrameOnly(engines.encode_value))
    cores = [InferenceCore(failing, CONFIG) for _ in clips]
    failures = 0
    for i in range(len(clips[0])):
        works = [
            core.begin(c[i], first_mask(n) if i == 0 else None)
            for core, c, n in zip(cores, clips, objects, strict=True)
        ]
        before = [marks(core) for core in cores]
        try:
            results = step_batch(failing, works)
        except RuntimeError:
            failures += 1
            # Segment gave each work's copy a new hidden state; the videos themselves are untouched
            assert [marks(core) for core in cores] == before
            assert all(work.state is not work.base for work in works)
            assert [marks_of(work.base) for work in works] == before
            results = [step_batch(failing, [work])[0] for work in works]  # as the scheduler retries
        results = [core.adopt(r) for core, r in zip(cores, results, strict=True)]
        for video, result in enumerate(results):
            want = alone[video][i]
            assert result.object_ids == want.object_ids
            assert result.is_memory_frame == want.is_memory_frame
            torch.testing.assert_close(result.prob, want.prob, atol=1e-5, rtol=0)
    # memory frames 0, 2, 4, 6, 8 failed together; consolidation ran on the retried state
    assert failures == 5
    for core, twin in zip(cores, solo, strict=True):
        m, t = core.state.memory, twin.state.memory
        assert (m.consolidations, m.work.size, m.long.size) == (t.consolidations, t.work.size, t.long.size)
        assert m.consolidations >= 1


def test_a_frame_refused_before_its_batch_leaves_no_trace(engines: XMemEngines) -> None:
    frames = clip(1, frames=4)
    core, twin = InferenceCore(engines, CONFIG), InferenceCore(engines, CONFIG)
    core.begin(frames[0], first_mask(2))  # refused (say, a full queue): never run
    assert core.state.frame_index == -1 and core.state.frame_size is None and not core.state.object_ids
    for i, frame in enumerate(frames):
        mask = first_mask(2) if i == 0 else None
        core.begin(frame, mask)  # prepared again and dropped, as a resend after 1013 would be
        got, want = core.step(frame, mask), twin.step(frame, mask)
        assert got.object_ids == want.object_ids
        torch.testing.assert_close(got.prob, want.prob, atol=0, rtol=0)
