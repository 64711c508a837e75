"""The embed stream: frames in; for the frame that completes a window, the window's
``result``; for every frame, ``frame_done``."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from fastapi import WebSocket

from models.videomae.inference import ClipInputError, Window, is_sampled
from server.api.framing import FrameHeader, FrameStream
from server.media import decode_image
from server.state import ServerState
from server.tasks.embed.service import EmbedService
from server.tasks.embed.session import EmbedSession
from server.tasks.embed.step import step
from server.tasks.embed.wire import segment


class EmbedStream(FrameStream):
    """Frames in; a window's embedding and labels out every ``stride`` frames once full."""

    client_errors: ClassVar[tuple[type[Exception], ...]] = (*FrameStream.client_errors, ClipInputError)

    def __init__(self, state: ServerState, ws: WebSocket, session: EmbedSession) -> None:
        super().__init__(state, ws, session)
        self.embed = session

    async def process(
        self, index: int, pts: float | None, data: bytes, header: FrameHeader | None, started: float
    ) -> None:
        session = self.embed
        # why running(), not service(): in-flight frames finish during a drain (see framing)
        service = self.state.running(session.model)
        assert isinstance(service, EmbedService)
        pixels = await asyncio.to_thread(decode_image, data, self.state.settings.max_pixels)
        sampled = is_sampled(session.clip)
        window = await step(service, session, pixels, index, pts)
        if window is not None:
            await self.send_window(index, window)
        await self.ws.send_json(
            {
                "type": "frame_done",
                "frame_index": index,
                "results": int(window is not None),
                "sampled": sampled,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )

    async def send_window(self, index: int, window: Window) -> None:
        message = await asyncio.to_thread(segment, window, self.embed.top_k)
        await self.ws.send_json({"type": "result", "frame_index": index, **message})
