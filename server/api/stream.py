"""``/v1/sessions/{id}/stream``: the websocket a live client streams frames over, and
the interpolation stream. The protocol is written down in docs/protocol.md."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from server import logs
from server.api.framing import CloseCode, FrameError, FrameHeader, FrameStream, close
from server.api.segment_stream import SegmentationStream
from server.media import decode_image, encode_image
from server.sessions import (
    InterpolationSession,
    SegmentationSession,
    SessionExpired,
    SessionNotFound,
    SessionState,
)
from server.state import ServerState
from server.tasks.interpolation import Interpolated

log = logging.getLogger(__name__)
router = APIRouter(tags=["sessions"])


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(ws: WebSocket, session_id: str) -> None:
    state: ServerState = ws.app.state.server
    logs.session_id.set(session_id)
    await ws.accept()  # why before any check: a close code with a reason needs an open socket
    try:
        session = state.sessions.get(session_id)
    except SessionNotFound as exc:
        await close(ws, CloseCode.UNKNOWN_SESSION, str(exc))
        return
    except SessionExpired as exc:
        await close(ws, CloseCode.SESSION_GONE, str(exc))
        return
    if session.core.state is SessionState.STREAMING:
        await close(ws, CloseCode.ALREADY_STREAMING, "another stream is attached to this session")
        return
    if not state.accepting:
        await close(ws, CloseCode.GOING_AWAY, "server shutting down")
        return
    session.core.state = SessionState.STREAMING
    state.active_streams += 1
    session.core.touch()
    try:
        handler: FrameStream
        if isinstance(session, InterpolationSession):
            handler = InterpolationStream(state, ws, session)
        else:
            assert isinstance(session, SegmentationSession)
            handler = SegmentationStream(state, ws, session)
        await handler.run()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("session %s: stream failed", session_id)
        await close(ws, CloseCode.INTERNAL_ERROR, "internal error; see the server log")
    finally:
        state.active_streams -= 1
        if session.core.state is SessionState.STREAMING:
            session.core.state = SessionState.OPEN
        session.core.touch()


class InterpolationStream(FrameStream):
    """Frames in; for each frame after the first, its pair's in-between frames out."""

    def __init__(self, state: ServerState, ws: WebSocket, session: InterpolationSession) -> None:
        super().__init__(state, ws, session)
        self.interpolation = session

    async def process(
        self, index: int, pts: float | None, data: bytes, header: FrameHeader | None, started: float
    ) -> None:
        results = await self.interpolate(index, pts, data)
        await self.send_frame_done(index, results, time.perf_counter() - started)

    async def interpolate(self, index: int, pts: float | None, data: bytes) -> list[Interpolated]:
        """Decode the frame; unless it is the first, return the pair's in-between frames."""
        session = self.interpolation
        service = self.state.interpolation_service(session.model)
        pixels = await asyncio.to_thread(decode_image, data, self.state.settings.max_pixels)
        if session.size is not None and pixels.shape[:2] != session.size:
            raise FrameError(
                "size_mismatch", f"frame is {pixels.shape[1]}×{pixels.shape[0]}, the session's frames are "
                f"{session.size[1]}×{session.size[0]}",
            )  # fmt: skip
        prepared = await asyncio.to_thread(service.prepare, pixels, session.scale)
        results: list[Interpolated] = []
        if session.previous is not None:
            results = await service.interpolate(
                session.id, session.previous, prepared, session.timesteps, session.scene_change_threshold
            )
            await self.send_results(index, pts, results)
        session.size = (pixels.shape[0], pixels.shape[1])
        session.previous, session.previous_index, session.previous_pts = prepared, index, pts
        return results

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
        session.outputs += len(results)
        session.scene_changes += int(any(r.scene_change for r in results))

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
