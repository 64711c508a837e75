"""The interpolation stream: frames in; for each frame after the first, its pair's
in-between frames out, then ``frame_done``."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from fastapi import WebSocket

from models.rife.inference import InterpolationInputError
from server.api.framing import FrameError, FrameHeader, FrameStream
from server.media import decode_image, encode_image
from server.state import ServerState
from server.tasks.interpolation.service import Interpolated, InterpolationService, OutputTooLarge
from server.tasks.interpolation.session import InterpolationSession
from server.tasks.interpolation.step import step


class InterpolationStream(FrameStream):
    """Frames in; for each frame after the first, its pair's in-between frames out."""

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
        results = await step(service, session, pixels, self.state.settings.max_output_pixels)
        await self.send_results(index, pts, results)
        session.previous_index, session.previous_pts = index, pts
        await self.send_frame_done(index, results, time.perf_counter() - started)

    async def send_results(self, index: int, pts: float | None, results: list[Interpolated]) -> None:
        session = self.interpolation
        fmt = session.output_format
        encoded = await asyncio.to_thread(lambda: [encode_image(r.frame, fmt) for r in results])
        for part, (result, data) in enumerate(zip(results, encoded, strict=True)):
            header = {
                "type": "result",
                "frame_index": index,
                "source": [session.previous_index, index],
                "timestep": result.timestep,
                "pts": _between(session.previous_pts, pts, result.timestep),
                "scene_change": result.scene_change,
                "part": part,
                "parts": len(results),
                "format": fmt,
                "bytes": len(data),
            }
            await self.ws.send_json(header)
            await self.ws.send_bytes(data)

    async def send_frame_done(self, index: int, results: list[Interpolated], seconds: float) -> None:
        await self.ws.send_json(
            {
                "type": "frame_done",
                "frame_index": index,
                "results": len(results),
                "scene_change": any(r.scene_change for r in results),
                "ms": round(seconds * 1000, 2),
            }
        )


def _between(pts0: float | None, pts1: float | None, timestep: float) -> float | None:
    if pts0 is None or pts1 is None:
        return None
    return pts0 + timestep * (pts1 - pts0)
