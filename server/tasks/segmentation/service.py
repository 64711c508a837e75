"""An XMem model being served: its engine set (three parts), its scheduler, and the way
of a frame: resized to the processing size and ``begin``-ed against the video's state
(data: the scheduler's payload), one frame per session batched across sessions
(``models/xmem/batch.py`` runs each engine once per batch), and masks brought back to the
input size. ``load`` turns settings into a warmed service.

``SegmentExecutor`` is the engine side; ``SegmentationService`` the session side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.xmem.batch import step_batch
from models.xmem.config import XMemConfig
from models.xmem.engines import ENGINE_NAMES
from models.xmem.export import XMemEngines
from models.xmem.inference_core import (
    FrameWork,
    InferenceCore,
    StepResult,
    XMemState,
    at_input_size,
    begin,
    processing_hw,
)
from models.xmem.loading import load_xmem_engines
from models.xmem.memory_manager import memory_bound_bytes
from server.engines.engine import EngineSet, warm_up
from server.engines.loading import WARMUP_HW, AutoEngines, folder_parts, load_folder_model
from server.scheduler import BatchStats, Priority, Scheduler, SchedulerConfig
from server.tasks.base import LoadContext


@dataclass(frozen=True)
class Segmented:
    """One frame's answer at the input size, and the video after it."""

    index_mask: np.ndarray  # uint8 H×W: the most probable object id per pixel, 0 background
    prob: np.ndarray | None  # float32 (1+N)×H×W: background, then ``object_ids``; when asked
    object_ids: list[int]  # tracked objects, ascending
    is_memory_frame: bool
    state: XMemState  # the video after this frame: adopt it to go on

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


class SegmentationService:
    """One XMem model being served: its shared engines, its scheduler, and the pipeline."""

    def __init__(
        self,
        model: str,
        engines: EngineSet,
        xmem: XMemEngines,
        config: SchedulerConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.model = model
        self.engines = engines
        self.xmem = xmem
        self.scheduler: Scheduler[FrameWork, StepResult] = Scheduler(
            model, SegmentExecutor(xmem), config, on_batch
        )

    @property
    def device(self) -> torch.device:
        return getattr(self.xmem.encode_key, "device", torch.device("cpu"))

    def fresh(self, config: XMemConfig) -> XMemState:
        """A new video over these engines (the checkpoint's widths, ``config``'s memory)."""
        return XMemState.fresh(self.xmem.widths.apply(config))

    def memory_bound(self, config: XMemConfig, hw: tuple[int, int], size: int | None, objects: int) -> int:
        """The most a video of frames ``hw`` (H, W as given) can hold, resized to ``size``:
        the one bound sessions and jobs reserve, at the checkpoint's widths."""
        return memory_bound_bytes(self.xmem.widths.apply(config), processing_hw(*hw, size), objects)

    async def step(
        self,
        owner: str,
        state: XMemState,
        frame: np.ndarray,
        mask: np.ndarray | None,
        objects: Sequence[int] | None,
        size: int | None,
        priority: Priority = Priority.LIVE,
        probabilities: bool = False,
    ) -> Segmented:
        """frame: uint8 H×W×3; mask: uint8 H×W ids or None → the frame's masks at H×W (and
        the probabilities at H×W on the host, only when ``probabilities``: on a GPU that copy
        is (1+N)×H×W floats a frame).

        ``objects`` limits which ids of ``mask`` are set (the others keep their prediction).
        Raises ``SegmentationInputError`` before anything runs for a bad frame or mask.
        """
        work = await asyncio.to_thread(
            begin, state, frame, mask, objects, video=owner, device=self.device, processing_size=size
        )
        (result,) = await asyncio.gather(*self.scheduler.submit(owner, work.padded_hw, [work], priority))
        height, width = frame.shape[:2]
        return await asyncio.to_thread(_to_input_size, result, height, width, probabilities)


def _to_input_size(result: StepResult, height: int, width: int, probabilities: bool) -> Segmented:
    """prob (1+N)×h×w → bilinear to H×W (as XMem's evaluation does), then argmax."""
    resized = at_input_size(result, height, width)
    prob = resized.prob.float().cpu().numpy() if probabilities else None
    index = resized.index_mask()
    return Segmented(index, prob, list(result.object_ids), result.is_memory_frame, result.state)


# --- loading ---------------------------------------------------------------------------

# why -1: the engines' row inputs (hidden, others) end each signature, so the last input
# counts object rows for segment and encode_value, and frames for encode_key
ROWS_INPUT = -1
# why ONNX Runtime on CPU too: issue 16 measured XMem's encode_key at 151 ms on ORT against 254
# on TorchScript, and segment at 916 against 1257, at 480×864 on this project's 2-core CPU;
# it also held up best under load (bench/xmem_core.py's table agrees: ORT 1.2-1.6× eager)
AUTO_ENGINES: AutoEngines = {"cpu": "onnx", "cuda": "onnx"}


def load(context: LoadContext) -> SegmentationService:
    """Load (exporting on first start) and warm up XMem's three engines, each a metered part."""
    settings, model = context.settings, context.model
    raw = load_folder_model(settings, model, load_xmem_engines, AUTO_ENGINES)
    engines = folder_parts(
        settings, model, raw, ENGINE_NAMES, context.observe, rows_input=ROWS_INPUT, auto=AUTO_ENGINES
    )
    xmem = XMemEngines(
        engines.runner("encode_key"), engines.runner("encode_value"), engines.runner("segment"), raw.widths
    )
    engines = warm_up(engines, lambda: _warm(raw))
    return SegmentationService(model, engines, xmem, context.scheduler, context.on_batch)


def _warm(engines: XMemEngines) -> None:
    """A masked frame then a predicted one: every engine runs once before the first user
    (on the unmetered runners, so warm-up is not counted as traffic)."""
    core = InferenceCore(engines, XMemConfig(mem_every=1))
    height, width = WARMUP_HW
    frame = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 2] = 1
    core.step(frame, mask)
    core.step(frame)
