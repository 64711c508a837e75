"""A VideoMAE model being served: its engine set (``embed`` and ``encode``), its scheduler,
and the shared stream pipeline (``models/videomae/inference.py``) driven through the
scheduler, so slices and windows are batched with other sessions' (windows by their kept
token count). ``load`` turns settings into a warmed service. Nothing here sees HTTP or
websockets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from models.steps import run_steps
from models.videomae.config import VideoMAEConfig
from models.videomae.export import PART_NAMES, VideoMAEEngines
from models.videomae.inference import (
    ClipState,
    Row,
    RowResult,
    Window,
    WindowSpec,
    batch_key,
    execute,
    frame_steps,
)
from models.videomae.loading import load_videomae_engines
from server.engines.engine import EngineSet, warm_up
from server.engines.loading import folder_parts, load_folder_model
from server.scheduler import BatchStats, Priority, Scheduler, SchedulerConfig
from server.scheduler.drive import drive
from server.tasks.base import LoadContext


class ClipExecutor:
    """Runs a scheduled batch: slices of several streams in one ``embed`` call, or windows of
    one kept-token count in one ``encode`` call."""

    def __init__(self, engines: VideoMAEEngines) -> None:
        self.engines = engines

    def execute(self, rows: Sequence[Row]) -> list[RowResult]:
        return execute(self.engines, rows)


class EmbedService:
    """One VideoMAE model being served: its shared engines, its scheduler, and the pipeline."""

    def __init__(
        self,
        model: str,
        engines: EngineSet,
        clip: VideoMAEEngines,
        config: SchedulerConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.model = model
        self.engines = engines
        self.clip = clip
        self.scheduler: Scheduler[Row, RowResult] = Scheduler(model, ClipExecutor(clip), config, on_batch)

    @property
    def config(self) -> VideoMAEConfig:
        """The checkpoint's architecture and head."""
        return self.clip.config

    @property
    def itemsize(self) -> int:
        """Bytes per token channel in the engines' precision."""
        return 2 if self.engines.parts[0].fp16 else 4

    async def frame(
        self,
        owner: str,
        state: ClipState,
        pixels: np.ndarray,
        index: int,
        pts: float | None,
        priority: Priority = Priority.LIVE,
    ) -> Window | None:
        """pixels: the stream's next frame, uint8 H×W×3 → the window it completes, or None.

        Raises ``Overloaded`` when the queue is full and ``Cancelled`` when ``owner`` is closed
        meanwhile; either way ``state`` is as it was, and the frame can be sent again."""
        steps = frame_steps(self.config, state, pixels, index, pts)
        return await drive(self.scheduler, owner, steps, batch_key, priority)


# --- loading ---------------------------------------------------------------------------


def load(context: LoadContext) -> EmbedService:
    """Load (exporting on first start) and warm up the encoder's two parts, each metered."""
    settings, model = context.settings, context.model
    raw = load_folder_model(settings, model, load_videomae_engines)
    engines = folder_parts(settings, model, raw, PART_NAMES, context.observe)
    clip = VideoMAEEngines(engines.runner("embed"), engines.runner("encode"), raw.config)
    # why the raw runners: warm-up is not traffic, so it is not metered
    engines = warm_up(engines, lambda: _warm(raw))
    return EmbedService(model, engines, clip, context.scheduler, context.on_batch)


def _warm(engines: VideoMAEEngines) -> None:
    """One window of one slice through both parts, so the first user does not pay for
    initialisation."""
    state = ClipState(WindowSpec(frames_per_clip=2, sampling_rate=1))
    frame = np.zeros((state.spec.size, state.spec.size, 3), np.uint8)
    with torch.inference_mode():
        for index in range(2):
            run_steps(frame_steps(engines.config, state, frame, index, None), lambda r: execute(engines, r))
