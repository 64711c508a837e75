"""The one per-frame step of interpolation, shared by the websocket stream, REST and clip
jobs: a stream's next frame in, the in-between frames of the pair it ends out."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator

import numpy as np

from server.scheduler import Priority
from server.scheduler.drive import retrying
from server.tasks.interpolation.service import Interpolated, InterpolationService
from server.tasks.interpolation.session import InterpolationSession


async def step(
    service: InterpolationService,
    session: InterpolationSession,
    pixels: np.ndarray,
    limit: int,
    priority: Priority = Priority.LIVE,
    timesteps: list[float] | None = None,
    chunk: int | None = None,
    on_part: Callable[[list[Interpolated]], Awaitable[None]] | None = None,
) -> list[Interpolated]:
    """pixels: the session's next frame, uint8 H×W×3 → the in-between frames of (its previous
    frame, this one), one per timestep (none for the first frame); then this frame is the
    session's previous one. A frame refused (a full queue, bad input) leaves the session as
    it was. ``limit``: the most pixels of in-between frames computed at once
    (``OutputTooLarge``). ``timesteps``: this pair's own (checked by the caller), else the
    session's. ``chunk``: run a pair's timesteps this many at a time (a clip retimed to a rate
    can need dozens in one pair of a variable-rate source); None: all at once. Only the first
    part may be refused as ``Overloaded``; later ones wait for room, as the pair is under way.
    ``on_part``: given each part's frames as they come, which are then not returned (so a
    long pair never holds all its frames). The caller keeps indices and timestamps."""
    timesteps = session.timesteps if timesteps is None else timesteps
    at_once = len(timesteps) if chunk is None else min(chunk, len(timesteps))
    service.check_output(pixels.shape[0], pixels.shape[1], session.scale, at_once, limit)
    prepared = await asyncio.to_thread(service.prepare, pixels, session.scale)
    results: list[Interpolated] = []
    if session.previous is not None:
        outputs, cut = 0, False
        for number, part in enumerate(_parts(timesteps, at_once)):
            attempt = functools.partial(
                service.interpolate,
                session.id, session.previous, prepared, part, session.scene_change_threshold, priority,
            )  # fmt: skip
            got = await (attempt() if number == 0 else retrying(attempt))
            outputs, cut = outputs + len(got), cut or any(r.scene_change for r in got)
            if on_part is None:
                results += got
            else:
                await on_part(got)
        session.outputs += outputs
        session.scene_changes += int(cut)
    session.size = (pixels.shape[0], pixels.shape[1])
    session.previous = prepared
    return results


def _parts(timesteps: list[float], size: int) -> Iterator[list[float]]:
    """``timesteps`` in runs of ``size``; none for no timesteps (the frame's features are
    encoded when it starts the next pair)."""
    for start in range(0, len(timesteps), max(1, size)):
        yield timesteps[start : start + size]
