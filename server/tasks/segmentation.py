"""XMem served: frames resized to the processing size, one frame per session batched
across sessions by the scheduler (``models/xmem/batch.py`` runs each engine once per
batch), and masks brought back to the input size.

``SegmentExecutor`` is the engine side; ``SegmentationService`` the session side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.xmem.batch import step_batch
from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines
from models.xmem.inference_core import STRIDE, FrameWork, InferenceCore, StepResult
from server.scheduler import BatchStats, Priority, Scheduler, SchedulerConfig

FLOAT_BYTES = 4
USAGE_FLOATS = 2  # why: each memory element keeps a usage and a life count (LFU rule)


@dataclass(frozen=True)
class Segmented:
    """One frame's answer at the input size."""

    index_mask: np.ndarray  # uint8 H×W: the most probable object id per pixel, 0 background
    prob: np.ndarray  # float32 (1+N)×H×W: background, then ``object_ids``
    object_ids: list[int]  # tracked objects, ascending
    is_memory_frame: bool

    @property
    def present(self) -> list[int]:
        """Objects that own at least one pixel."""
        found = set(np.unique(self.index_mask).tolist())
        return [obj for obj in self.object_ids if obj in found]


class SegmentExecutor:
    """Runs a scheduled batch: one prepared frame of each session, every engine once."""

    def __init__(self, engines: XMemEngines) -> None:
        self.engines = engines

    def execute(self, works: Sequence[FrameWork]) -> list[StepResult]:
        return step_batch(self.engines, works)


def processing_hw(height: int, width: int, size: int | None) -> tuple[int, int]:
    """XMem's evaluation resize: the shorter side becomes ``size`` (None: as given)."""
    if size is None:
        return height, width
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded_positions(height: int, width: int) -> int:
    """Memory elements per frame: positions of the stride-16 feature map."""
    return -(-height // STRIDE) * -(-width // STRIDE)


def memory_bound_bytes(config: XMemConfig, positions: int, objects: int) -> int:
    """The most one session's memory can hold: working memory just before it consolidates,
    a full long-term memory, and the sensory memory (float32 everywhere)."""
    per_element = FLOAT_BYTES * (2 * config.key_dim + 1 + USAGE_FLOATS + config.value_dim * objects)
    elements = (config.max_mid_term_frames + 1) * positions
    if config.enable_long_term:
        elements += config.max_long_term_elements + config.num_prototypes
    sensory = FLOAT_BYTES * objects * config.hidden_dim * positions
    return elements * per_element + sensory


class SegmentationService:
    """One XMem model being served: its shared engines, its scheduler, and the pipeline."""

    def __init__(
        self,
        model: str,
        engines: XMemEngines,
        config: SchedulerConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.model = model
        self.engines = engines
        self.scheduler: Scheduler[FrameWork, StepResult] = Scheduler(
            model, SegmentExecutor(engines), config, on_batch
        )

    async def step(
        self,
        owner: str,
        core: InferenceCore,
        frame: np.ndarray,
        mask: np.ndarray | None,
        objects: Sequence[int] | None,
        size: int | None,
        priority: Priority = Priority.LIVE,
    ) -> Segmented:
        """frame: uint8 H×W×3; mask: uint8 H×W ids or None → the frame's masks at H×W.

        ``objects`` limits which ids of ``mask`` are set (the others keep their prediction).
        Raises ``SegmentationInputError`` before any state changes for a bad frame or mask.
        """
        height, width = frame.shape[:2]
        work = await asyncio.to_thread(_begin, core, frame, mask, objects, processing_hw(height, width, size))
        (result,) = await asyncio.gather(*self.scheduler.submit(owner, work.padded_hw, [work], priority))
        return await asyncio.to_thread(_to_input_size, result, height, width)


def _begin(
    core: InferenceCore,
    frame: np.ndarray,
    mask: np.ndarray | None,
    objects: Sequence[int] | None,
    hw: tuple[int, int],
) -> FrameWork:
    if hw != frame.shape[:2]:
        frame = np.array(Image.fromarray(frame).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
        if mask is not None:
            mask = np.array(Image.fromarray(mask).resize((hw[1], hw[0]), Image.Resampling.NEAREST))
    return core.begin(frame, mask, objects)


def _to_input_size(result: StepResult, height: int, width: int) -> Segmented:
    """prob (1+N)×h×w → bilinear to H×W (as XMem's evaluation does), then argmax."""
    prob = result.prob.float()
    if tuple(prob.shape[-2:]) != (height, width):
        prob = F.interpolate(prob[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    ids = torch.tensor([0, *result.object_ids], dtype=torch.uint8)
    index = ids[prob.argmax(0).cpu()].numpy()
    return Segmented(index, prob.cpu().numpy(), list(result.object_ids), result.is_memory_frame)
