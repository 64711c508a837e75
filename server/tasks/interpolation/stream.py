"""The interpolation stream: frames in; for each frame after the first, its pair's
in-between frames out, then ``frame_done``."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import ClassVar

import numpy as np
from fastapi import WebSocket
from pydantic import Field

from models.rife.inference import InterpolationInputError, check_timesteps
from server.api.framing import FrameError, FrameHeader, FrameStream
from server.media import decode_image, encode_image
from server.state import ServerState
from server.tasks.interpolation.service import Interpolated, InterpolationService, OutputTooLarge
from server.tasks.interpolation.session import InterpolationSession
from server.tasks.interpolation.step import step


class InterpolationFrameHeader(FrameHeader):
    """A frame header that may give this frame's own timesteps: a client retiming a clip to a
    frame rate needs other positions (or none) in each pair."""

    timesteps: list[float] | None = Field(
        None,
        max_length=63,
        description="increasing positions in (0, 1) of the in-betweens of (previous frame, this one), "
        "instead of the session's; [] for none. Ignored on a stream's first frame",
    )


class InterpolationStream(FrameStream):
    """Frames in; for each frame after the first, its pair's in-between frames out."""

    header_model = InterpolationFrameHeader
    client_errors: ClassVar[tuple[type[Exception], ...]] = (
        *FrameStream.client_errors,
        InterpolationInputError,
        OutputTooLarge,
    )

    def __init__(self, state: ServerState, ws: WebSocket, session: InterpolationSession) -> None:
        super().__init__(state, ws, session)
        self.interpolation = session

    async def process(
        self, index: int, pts: float | None, data: bytes, header: FrameHeader | None, started: float
    ) -> None:
        session = self.interpolation
        # why running(), not service(): it refuses new work during a drain, and this frame was
        # admitted before it; in-flight frames finish
        service = self.state.running(session.model)
        assert isinstance(service, InterpolationService)
        pixels = await asyncio.to_thread(decode_image, data, self.state.settings.max_pixels)
        if session.size is not None and pixels.shape[:2] != session.size:
            raise FrameError(
                "size_mismatch", f"frame is {pixels.shape[1]}×{pixels.shape[0]}, the session's frames are "
                f"{session.size[1]}×{session.size[0]}",
            )  # fmt: skip
        timesteps = header.timesteps if isinstance(header, InterpolationFrameHeader) else None
        if timesteps is None:
            results = await step(service, session, pixels, self.state.settings.max_output_pixels)
            await self.send_results(index, pts, results, 0, len(results))
            count, cut = len(results), any(r.scene_change for r in results)
        else:
            count, cut = await self._own_timesteps(service, pixels, index, pts, timesteps)
        session.previous_index, session.previous_pts = index, pts
        await self.send_frame_done(index, count, cut, time.perf_counter() - started)

    async def _own_timesteps(
        self,
        service: InterpolationService,
        pixels: np.ndarray,
        index: int,
        pts: float | None,
        timesteps: list[float],
    ) -> tuple[int, bool]:
        """A frame header's timesteps (a client retiming to a rate): run in parts that fit the
        output bound and the queue, each part sent as it is done. Returns (results, a cut)."""
        settings, session = self.state.settings, self.interpolation
        check_frame_timesteps(timesteps)
        padded_h, padded_w = service.spec.padded_size(pixels.shape[0], pixels.shape[1], session.scale)
        chunk = max(1, min(settings.max_queue_size, settings.max_output_pixels // (padded_h * padded_w)))
        parts = 0 if session.previous is None else len(timesteps)
        sent, cut = 0, False

        async def send(part: list[Interpolated]) -> None:
            nonlocal sent, cut
            await self.send_results(index, pts, part, sent, parts)
            sent, cut = sent + len(part), cut or any(r.scene_change for r in part)

        limit = settings.max_output_pixels
        await step(service, session, pixels, limit, timesteps=timesteps, chunk=chunk, on_part=send)
        return sent, cut

    async def send_results(
        self, index: int, pts: float | None, results: list[Interpolated], first: int, parts: int
    ) -> None:
        """``results`` are parts ``first``... of the pair's ``parts``."""
        session = self.interpolation
        fmt = session.output_format
        encoded = await asyncio.to_thread(lambda: [encode_image(r.frame, fmt) for r in results])
        for part, (result, data) in enumerate(zip(results, encoded, strict=True), start=first):
            header = {
                "type": "result",
                "frame_index": index,
                "source": [session.previous_index, index],
                "timestep": result.timestep,
                "pts": _between(session.previous_pts, pts, result.timestep),
                "scene_change": result.scene_change,
                "part": part,
                "parts": parts,
                "format": fmt,
                "bytes": len(data),
            }
            await self.ws.send_json(header)
            await self.ws.send_bytes(data)

    async def send_frame_done(self, index: int, results: int, scene_change: bool, seconds: float) -> None:
        await self.ws.send_json(
            {
                "type": "frame_done",
                "frame_index": index,
                "results": results,
                "scene_change": scene_change,
                "ms": round(seconds * 1000, 2),
            }
        )


def check_frame_timesteps(timesteps: list[float]) -> None:
    """A frame's own timesteps: none, or increasing in (0, 1)."""
    if timesteps:
        check_timesteps(timesteps)
    if any(b <= a for a, b in itertools.pairwise(timesteps)):
        raise InterpolationInputError("timesteps must increase, so frames come back in time order")


def _between(pts0: float | None, pts1: float | None, timestep: float) -> float | None:
    if pts0 is None or pts1 is None:
        return None
    return pts0 + timestep * (pts1 - pts0)
