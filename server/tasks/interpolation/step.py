"""The one per-frame step of interpolation, shared by the websocket stream, REST and clip
jobs: a stream's next frame in, the in-between frames of the pair it ends out."""

from __future__ import annotations

import asyncio

import numpy as np

from server.scheduler import Priority
from server.tasks.interpolation.service import Interpolated, InterpolationService
from server.tasks.interpolation.session import InterpolationSession


async def step(
    service: InterpolationService,
    session: InterpolationSession,
    pixels: np.ndarray,
    limit: int,
    priority: Priority = Priority.LIVE,
) -> list[Interpolated]:
    """pixels: the session's next frame, uint8 H×W×3 → the in-between frames of (its previous
    frame, this one), one per timestep (none for the first frame); then this frame is the
    session's previous one. A frame refused (a full queue, bad input) leaves the session as
    it was. ``limit``: the most pixels of in-between frames per frame (``OutputTooLarge``).
    The caller keeps indices and timestamps."""
    service.check_output(pixels.shape[0], pixels.shape[1], session.scale, len(session.timesteps), limit)
    prepared = await asyncio.to_thread(service.prepare, pixels, session.scale)
    results: list[Interpolated] = []
    if session.previous is not None:
        results = await service.interpolate(
            session.id,
            session.previous,
            prepared,
            session.timesteps,
            session.scene_change_threshold,
            priority,
        )
        session.outputs += len(results)
        session.scene_changes += int(any(r.scene_change for r in results))
    session.size = (pixels.shape[0], pixels.shape[1])
    session.previous = prepared
    return results
