"""The framing every session stream shares (docs/protocol.md): text headers and controls,
binary frames, one answer or one error per frame, and the close codes.

A task's stream subclasses ``FrameStream`` and implements ``process`` (and, to take
controls, ``on_control``); its ``client_errors`` name the exceptions that are the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any, ClassVar

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server import logs
from server.api.errors import clip
from server.media import MediaError
from server.scheduler import Cancelled, Overloaded, TooLarge
from server.sessions import BudgetExceeded, SessionState
from server.sessions.store import FrameOrderError, Session
from server.state import ServerState

log = logging.getLogger(__name__)
MAX_REASON_BYTES = 123  # why: RFC 6455 §5.5 caps a close frame's payload at 125 bytes, 2 of them the code


class CloseCode(enum.IntEnum):
    NORMAL = 1000  # the session was deleted, or the client said goodbye
    GOING_AWAY = 1001  # the server is shutting down
    SERVICE_RESTART = 1012  # the session was checkpointed: reconnect, any replica resumes it
    INTERNAL_ERROR = 1011  # a server bug; the session may be retried
    TRY_AGAIN_LATER = 1013  # overloaded: the frame named in the last error was not run
    UNAUTHORIZED = 4401  # no API key, or an unknown one (the HTTP 401 of a websocket)
    FORBIDDEN_ORIGIN = 4403  # a browser page of an origin not allowed (VIDSERVE_ALLOWED_ORIGINS)
    UNKNOWN_SESSION = 4404  # no such session (or another key's)
    # another websocket is attached to this session, or another replica holds it
    ALREADY_STREAMING = 4409
    SESSION_GONE = 4410  # the session expired (idle TTL) or was closed
    STATE_INCOMPATIBLE = 4422  # its stored state is another model's or weights', or unreadable


# why 2**53: the largest integer a JSON number carries exactly (what a browser can send); an
# index of 4300 nines once made every later frame of its session fail (issue 14)
MAX_INDEX = 2**53


class FrameHeader(BaseModel):
    """The optional text message before a frame's bytes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = "frame"
    frame_index: int | None = Field(
        None, ge=0, le=MAX_INDEX, description="the client's frame number; default previous + 1"
    )
    pts: float | None = Field(
        None, allow_inf_nan=False, description="presentation time of the frame, in the client's units"
    )


class FrameError(Exception):
    """A frame that cannot be used; the stream goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def close(ws: WebSocket, code: int, reason: str) -> None:
    encoded = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    with contextlib.suppress(RuntimeError):  # already closed by the client
        await ws.close(code, encoded)


class FrameStream:
    """One attached websocket: frames in, one answer (or one error) per frame, in order."""

    header_model: type[FrameHeader] = FrameHeader
    # errors that are the client's: the frame is answered with its code and the stream goes on
    # (a task's stream adds its own)
    client_errors: ClassVar[tuple[type[Exception], ...]] = (FrameError, FrameOrderError, MediaError, TooLarge)

    def __init__(self, state: ServerState, ws: WebSocket, session: Session) -> None:
        self.state = state
        self.ws = ws
        self.session = session
        self.header: FrameHeader | None = None  # applies to the next binary message

    async def run(self) -> None:
        await self.ws.send_json({"type": "session", **self.session.public()})
        while True:
            message = await self.receive()
            if message is None or message["type"] == "websocket.disconnect":
                return
            self.session.core.touch()
            text, data = message.get("text"), message.get("bytes")
            if self.session.core.closed.is_set():
                await self.refuse_after_close(data)
                return
            if isinstance(text, str):
                await self.on_text(text)
            elif isinstance(data, bytes) and not await self.on_frame(data):
                return

    async def receive(self) -> MutableMapping[str, Any] | None:
        """The next message, or None once the session was closed (and the socket with it)."""
        receive = asyncio.ensure_future(self.ws.receive())
        closed = asyncio.ensure_future(self.session.core.closed.wait())
        await asyncio.wait({receive, closed}, return_when=asyncio.FIRST_COMPLETED)
        if receive.done():
            closed.cancel()
            return receive.result()
        receive.cancel()
        await close(self.ws, *self.close_code())
        return None

    async def refuse_after_close(self, data: object) -> None:
        """A message that arrived as the session closed: a frame still gets its error."""
        if isinstance(data, bytes):
            index, _ = self.next_frame()
            self.session.core.frames_in += 1
            await self.fail(index, *self.refusal(), "cancelled")
        await close(self.ws, *self.close_code())

    def refusal(self) -> tuple[str, str]:
        """Why a frame that arrived after its session closed was not run: a drain closes every
        session, so the frame names the shutdown rather than a close the client never asked for."""
        if not self.state.accepting:
            return "shutting_down", "the server is shutting down; the frame was not run"
        return "session_closed", "the session was closed; the frame was not run"

    def close_code(self) -> tuple[int, str]:
        core = self.session.core
        if core.state is SessionState.MOVED:
            return CloseCode.SERVICE_RESTART, f"session checkpointed ({core.closed_reason}); reconnect"
        if not self.state.accepting:
            return CloseCode.GOING_AWAY, "server shutting down"
        if core.state is SessionState.CLOSED:
            return CloseCode.NORMAL, f"session {core.closed_reason}"
        return CloseCode.SESSION_GONE, f"session expired: {core.closed_reason}"

    async def on_text(self, text: str) -> None:
        self.header = None  # why: a header that fails must not leave an older one to apply
        try:
            message = json.loads(text)
        # why Recursion: '[[[[...' nests too deep; ValueError: an integer of more than 4300 digits
        except (ValueError, RecursionError) as exc:
            await self.send_error(None, "invalid_json", f"text message is not JSON we accept: {exc}")
            return
        kind = message.get("type", "frame") if isinstance(message, dict) else None
        try:
            if kind == "frame":
                self.header = self.header_model.model_validate(message)
            else:
                await self.on_control(kind, message)
        except ValidationError as exc:
            await self.send_error(None, "invalid_message", _summary(exc))
        except self.client_errors as exc:
            await self.send_error(None, getattr(exc, "code", "invalid_argument"), str(exc))

    async def on_control(self, kind: object, message: object) -> None:
        """A text message that is not a frame header; tasks with controls override this."""
        raise FrameError("invalid_message", f"unknown message type {kind!r}")

    def next_frame(self) -> tuple[int, float | None]:
        """This frame's index and pts: from the header before it, else the session's next."""
        header, self.header = self.header, None
        index = self.session.core.next_index(header.frame_index if header else None)
        return index, header.pts if header else None

    async def on_frame(self, data: bytes) -> bool:
        """Answer one frame with its results or with an error naming it; False ends the stream."""
        with self.session.core.receiving():
            return await self._answer(data)

    async def _answer(self, data: bytes) -> bool:
        started = time.perf_counter()
        header = self.header
        index, pts = self.next_frame()
        logs.frame_index.set(index)
        if not self.state.accepting:
            await self.fail(index, *self.refusal(), "cancelled")
            return True
        previous = self.session.core.last_index
        try:
            self.session.core.take_index(index)
            with self.state.announce(self.session.model, self.session.id):
                await self.process(index, pts, data, header, started)
            self.session.core.frames_done += 1
            self.state.after_frame(self.session)
            self.count("ok")
            return True
        except self.client_errors as exc:
            code = getattr(exc, "code", "invalid_argument")
            await self.fail(index, code, str(exc), "client_error")
            return True
        except BudgetExceeded as exc:
            await self.fail(index, "memory_budget_exceeded", str(exc), "overloaded")
            return True
        except Overloaded as exc:
            self.session.core.give_back_index(index, previous)
            await self.fail(index, "overloaded", f"{exc}; the frame was not run, resend it", "overloaded")
            await close(self.ws, CloseCode.TRY_AGAIN_LATER, "overloaded: reconnect and resend the frame")
            return False
        except Cancelled as exc:
            code = "session_closed" if self.state.accepting else "shutting_down"
            await self.fail(index, code, str(exc), "cancelled")
            return True
        except WebSocketDisconnect:
            raise
        except Exception:
            log.exception("session %s: frame %s failed", self.session.id, index)
            await self.fail(index, "internal_error", "internal error; see the server log", "server_error")
            return True

    async def process(
        self, index: int, pts: float | None, data: bytes, header: FrameHeader | None, started: float
    ) -> None:
        """Run one frame and send its answer; raise to answer with an error instead."""
        raise NotImplementedError

    async def fail(self, index: int, code: str, message: str, outcome: str) -> None:
        log.info("frame %d answered with %s: %s", index, code, clip(message))
        self.session.core.frames_failed += 1
        self.count(outcome)
        await self.send_error(index, code, message)

    async def send_error(self, index: int | None, code: str, message: str) -> None:
        await self.ws.send_json(
            {"type": "error", "frame_index": index, "code": code, "message": clip(message)}
        )

    def count(self, outcome: str) -> None:
        self.state.metrics.frames.labels(self.session.task, outcome).inc()


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
