"""RIFE served: frames padded once, rows batched across sessions by the scheduler, the
v4.0 big-motion retry, scene changes, and crops back to the frame size.

``RifeExecutor`` is the engine side (it runs a batch); ``InterpolationService`` is the
session side (it submits rows and awaits them). Neither sees HTTP or websockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.rife.inference import InterpolationInputError, check_scale, check_timesteps, to_padded, to_uint8
from models.rife.scene import is_scene_change
from models.rife.spec import RifeSpec
from server.engines import Engine
from server.scheduler import BatchStats, Priority, Scheduler, SchedulerConfig


@dataclass(frozen=True)
class PreparedFrame:
    """A decoded frame, its padded tensor and (4.22+) its features, made once and reused for
    both of its pairs: a session keeps the previous one."""

    pixels: np.ndarray  # uint8 H×W×3
    padded: Tensor  # float32 1×3×Hp×Wp in [0, 1] on the engine's device, zeros right and bottom
    scale: float  # the scale ``padded`` was sized for
    features: Tensor | None  # 1×k×Hp×Wp from the feature encoder (4.22+), else None


@dataclass(frozen=True)
class RifeRow:
    """One row of an engine call: a padded pair at one timestep."""

    img0: Tensor  # float32 1×3×Hp×Wp
    img1: Tensor  # float32 1×3×Hp×Wp
    f0: Tensor | None  # 1×k×Hp×Wp: img0's encoder features (4.22+), else None
    f1: Tensor | None  # 1×k×Hp×Wp: img1's
    timestep: float  # in (0, 1)
    scale: float  # flow resolution: 1.0 up to 1080p, 0.5 for 4K (RIFE's own advice)


@dataclass(frozen=True)
class RifeRowResult:
    frame: Tensor  # float32 3×Hp×Wp in [0, 1]
    big_motion: bool  # v4.0 only: the motion exceeds the coarsest block; rerun one octave coarser


@dataclass(frozen=True)
class Interpolated:
    """One in-between frame as sessions and REST return it."""

    timestep: float
    frame: np.ndarray  # uint8 H×W×3
    scene_change: bool  # True: ``frame`` is a copy of the earlier frame, not a blend


class RifeExecutor:
    """Runs a scheduled batch of rows as one engine call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def execute(self, rows: Sequence[RifeRow]) -> list[RifeRowResult]:
        img0 = torch.cat([r.img0 for r in rows])  # B×3×Hp×Wp
        img1 = torch.cat([r.img1 for r in rows])
        timestep = torch.tensor([r.timestep for r in rows], dtype=torch.float32)  # B
        scale = torch.tensor([rows[0].scale], dtype=torch.float32)  # [1]: one scale per batch key
        if self.engine.encoder is None:
            frames, big_motion = self.engine.run(img0, img1, timestep, scale)
        else:
            f0 = torch.cat([_present(r.f0) for r in rows])  # B×k×Hp×Wp
            f1 = torch.cat([_present(r.f1) for r in rows])
            frames, big_motion = self.engine.run(img0, img1, f0, f1, timestep, scale)
        frames = frames.float()
        flags = big_motion.bool().cpu().tolist()
        return [RifeRowResult(frames[i], bool(flags[i])) for i in range(len(rows))]


class InterpolationService:
    """One RIFE model being served: its shared engine, its scheduler, and the pipeline."""

    def __init__(
        self,
        spec: RifeSpec,
        engine: Engine,
        config: SchedulerConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.scheduler: Scheduler[RifeRow, RifeRowResult] = Scheduler(
            engine.model, RifeExecutor(engine), config, on_batch
        )

    def prepare(self, pixels: np.ndarray, scale: float) -> PreparedFrame:
        """pixels: uint8 H×W×3 → padded once for every pair it takes part in."""
        check_scale(scale)
        padded_hw = self.spec.padded_size(pixels.shape[0], pixels.shape[1], scale)
        padded = to_padded(pixels, padded_hw).to(self.engine.device)
        features = self.engine.encode(padded) if self.engine.encoder is not None else None
        return PreparedFrame(pixels, padded, scale, features)

    async def interpolate(
        self,
        owner: str,
        frame0: PreparedFrame,
        frame1: PreparedFrame,
        timesteps: Sequence[float],
        scene_change_threshold: float | None,
        priority: Priority = Priority.LIVE,
    ) -> list[Interpolated]:
        """The in-between frames of (frame0, frame1), one per timestep, in order.

        Raises ``Overloaded`` when the engine queue is full, ``Cancelled`` when ``owner``
        is closed meanwhile.
        """
        check_timesteps(timesteps)
        if frame0.pixels.shape != frame1.pixels.shape or frame0.scale != frame1.scale:
            raise InterpolationInputError(
                f"frame sizes differ: {frame0.pixels.shape[:2]} and {frame1.pixels.shape[:2]}"
            )
        is_cut = await asyncio.to_thread(
            is_scene_change, frame0.pixels, frame1.pixels, scene_change_threshold
        )
        if is_cut:
            return [Interpolated(t, frame0.pixels, scene_change=True) for t in timesteps]
        frames = await self._run(owner, frame0, frame1, timesteps, priority)
        height, width = frame0.pixels.shape[:2]
        pixels = await asyncio.to_thread(_crop_to_uint8, frames, height, width)
        return [Interpolated(t, p, scene_change=False) for t, p in zip(timesteps, pixels, strict=True)]

    async def _run(
        self,
        owner: str,
        frame0: PreparedFrame,
        frame1: PreparedFrame,
        timesteps: Sequence[float],
        priority: Priority,
    ) -> list[Tensor]:
        """A prepared pair → one 3×Hp×Wp frame per timestep, big-motion rows rerun."""
        img0, img1, scale = frame0.padded, frame1.padded, frame0.scale
        key = (tuple(img0.shape[-2:]), scale)
        rows = [RifeRow(img0, img1, frame0.features, frame1.features, t, scale) for t in timesteps]
        results = await asyncio.gather(*self.scheduler.submit(owner, key, rows, priority))
        frames = [r.frame for r in results]
        needs_retry = [i for i, r in enumerate(results) if r.big_motion]
        if needs_retry:
            retry = [timesteps[i] for i in needs_retry]
            again = await self._run_coarser(owner, img0, img1, retry, scale / 2, priority)
            for i, frame in zip(needs_retry, again, strict=True):
                frames[i] = frame
        return frames

    async def _run_coarser(
        self,
        owner: str,
        img0: Tensor,
        img1: Tensor,
        timesteps: Sequence[float],
        scale: float,
        priority: Priority,
    ) -> list[Tensor]:
        """v4.0's rerun one octave coarser, as the reference does; half the scale can need a
        larger padding multiple (the reference crashes there), so pad further and crop back."""
        height, width = img0.shape[-2], img0.shape[-1]
        padded_h, padded_w = self.spec.padded_size(height, width, scale)
        pad = (0, padded_w - width, 0, padded_h - height)
        key = ((padded_h, padded_w), scale)
        # why no features: only 4.0 asks for this rerun, and it has no encoder
        rows = [RifeRow(F.pad(img0, pad), F.pad(img1, pad), None, None, t, scale) for t in timesteps]
        results = await asyncio.gather(*self.scheduler.submit(owner, key, rows, priority))
        return [r.frame[:, :height, :width] for r in results]


def _crop_to_uint8(frames: list[Tensor], height: int, width: int) -> list[np.ndarray]:
    """frames: float32 3×Hp×Wp → uint8 H×W×3 each."""
    return [to_uint8(f[:, :height, :width].cpu().numpy()) for f in frames]


def _present(features: Tensor | None) -> Tensor:
    assert features is not None, "a row of a model with a feature encoder came without features"
    return features
