"""A RIFE model being served: its engine set, its scheduler, and the shared pipeline
(``models/rife/inference.py``) driven through the scheduler, so each step's rows (feature
encoder, flow, the 4.0 rerun) are batched with other sessions' rows.

``load`` turns settings into a warmed service; the scheduler's executor is the model's
``RifeEngines`` (it runs a batch of rows of one key). Nothing here sees HTTP or websockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.repository import ENGINE_FILES, engine_dir
from models.rife.export import Part, part_model
from models.rife.inference import (
    Between,
    PreparedFrame,
    RifeEngines,
    Row,
    RowResult,
    batch_key,
    pair_steps,
    prepare,
    run_steps,
    to_uint8,
)
from models.rife.loading import make_runner
from models.rife.spec import RifeSpec, get_spec
from models.runtime import EngineKind, Runner
from server.engines.engine import EngineError, EnginePart, EngineSet, warm_up
from server.engines.loading import (
    WARMUP_HW,
    choose_backend,
    choose_providers,
    repository,
    resolve_weights,
    torch_device,
)
from server.scheduler import BatchStats, Priority, Scheduler, SchedulerConfig
from server.scheduler.drive import drive
from server.settings import Settings
from server.tasks.base import LoadContext


@dataclass(frozen=True)
class Interpolated:
    """One in-between frame as sessions, REST and jobs return it."""

    timestep: float
    frame: np.ndarray  # uint8 H×W×3
    scene_change: bool  # True: ``frame`` is a copy of the earlier frame, not a blend


class OutputTooLarge(ValueError):
    """A frame's in-between frames would hold more pixels than ``VIDSERVE_MAX_OUTPUT_PIXELS``
    (413): each timestep is a padded frame computed and held at once (issue 14: factor 64
    at 960×540, from a 9 KB upload, took 1.33 GB)."""

    status = 413
    code = "output_too_large"


class InterpolationService:
    """One RIFE model being served: its shared engines, its scheduler, and the pipeline."""

    def __init__(
        self,
        model: str,
        engines: EngineSet,
        rife: RifeEngines,
        config: SchedulerConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.model = model
        self.engines = engines
        self.rife = rife
        self.scheduler: Scheduler[Row, RowResult] = Scheduler(model, rife, config, on_batch)

    @property
    def spec(self) -> RifeSpec:
        return self.rife.spec

    def check_output(self, height: int, width: int, scale: float, rows: int, limit: int) -> None:
        """Refuse, before anything runs, ``rows`` in-between frames of H×W (padded) past ``limit``
        pixels in all."""
        padded_h, padded_w = self.spec.padded_size(height, width, scale)
        pixels = rows * padded_h * padded_w
        if pixels > limit:
            most = max(1, limit // (padded_h * padded_w))
            raise OutputTooLarge(
                f"{rows} in-between frames of {width}×{height} (padded {padded_w}×{padded_h}) are "
                f"{pixels} pixels, more than VIDSERVE_MAX_OUTPUT_PIXELS={limit}; at this size at most "
                f"{most} per frame (factor {most + 1})"
            )

    def prepare(self, pixels: np.ndarray, scale: float) -> PreparedFrame:
        """pixels: uint8 H×W×3 → padded once for every pair it takes part in."""
        return prepare(self.spec, pixels, scale, self.rife.device)

    async def interpolate(
        self,
        owner: str,
        frame0: PreparedFrame,
        frame1: PreparedFrame,
        timesteps: Sequence[float],
        scene_change_threshold: float | None,
        priority: Priority = Priority.LIVE,
    ) -> list[Interpolated]:
        """The in-between frames of (frame0, frame1), one per timestep, in order; frames
        without features are encoded first (once: they keep them).

        Raises ``Overloaded`` when the engine queue cannot take the pair's rows (before any
        of them runs, the encoder's included), ``Cancelled`` when ``owner`` is closed meanwhile.
        """
        self.scheduler.check_room(len(timesteps), priority)
        steps = pair_steps(
            self.spec,
            frame0,
            frame1,
            timesteps,
            encodes=self.rife.encoder is not None,
            scene_change_threshold=scene_change_threshold,
        )
        betweens = await drive(self.scheduler, owner, steps, batch_key, priority)
        return await asyncio.to_thread(_to_uint8, frame0, betweens)


def _to_uint8(frame0: PreparedFrame, betweens: list[Between]) -> list[Interpolated]:
    """float32 3×H×W each → uint8 H×W×3; a scene cut gives the earlier frame as it came."""
    return [
        Interpolated(
            b.timestep, frame0.pixels if b.scene_change else to_uint8(b.frame.cpu().numpy()), b.scene_change
        )
        for b in betweens
    ]


# --- loading ---------------------------------------------------------------------------


def load(context: LoadContext) -> InterpolationService:
    """Load (exporting on first start) and warm up one RIFE model: the whole network, or for
    4.22+ its feature encoder and its flow part, each metered as a part of the model."""
    settings, model = context.settings, context.model
    spec = get_spec(model)
    backend = choose_backend(settings)
    weights = resolve_weights(settings, model)
    has_encoder = spec.encoder_channels > 0
    names: tuple[Part, ...] = ("encoder", "flow") if has_encoder else ("full",)

    def runner(name: Part) -> Runner:
        try:
            return make_runner(
                model,
                weights,
                backend,
                fp16=settings.fp16,
                repository=repository(settings),
                providers=choose_providers(settings, model),
                device=torch_device(),
                part=name,
            )
        except ValueError as exc:  # the weights do not fit, or fp16 without an exported engine
            raise EngineError(f"{model}: {exc}") from exc

    raw = {name: runner(name) for name in names}
    observe = context.observe if has_encoder else None  # why: a model of one part is metered by its batches
    parts = [
        EnginePart.of(
            model, n, r, fp16=settings.fp16, path=_path(settings, backend, model, n), observe=observe
        )
        for n, r in raw.items()
    ]
    engines = EngineSet(model, tuple(parts))
    rife = RifeEngines(spec, engines.runner(names[-1]), engines.runner("encoder") if has_encoder else None)
    # why the raw runners: warm-up is not traffic, so it is not metered
    engines = warm_up(engines, lambda: _warm(RifeEngines(spec, raw[names[-1]], raw.get("encoder"))))
    return InterpolationService(model, engines, rife, context.scheduler, context.on_batch)


def _path(settings: Settings, backend: EngineKind, model: str, name: Part) -> Path | None:
    if backend == "eager":
        return None
    return (
        engine_dir(repository(settings), part_model(model, name), backend, settings.fp16)
        / ENGINE_FILES[backend]
    )


def _warm(rife: RifeEngines) -> None:
    """One small pair through the pipeline, so the first user frame does not pay for
    initialisation; every part runs."""
    gen = np.random.default_rng(0)
    pixels = gen.integers(0, 256, (2, *WARMUP_HW, 3), dtype=np.uint8)
    frame0, frame1 = (prepare(rife.spec, p, 1.0, rife.device) for p in pixels)
    steps = pair_steps(
        rife.spec, frame0, frame1, [0.5], encodes=rife.encoder is not None, scene_change_threshold=None
    )
    with torch.inference_mode():
        run_steps(steps, rife.execute)
