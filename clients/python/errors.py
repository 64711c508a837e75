"""Typed errors carrying the server's code and message (docs/protocol.md §1, §6, §7)."""

from __future__ import annotations

from typing import Any


class VidserveError(Exception):
    """Any error the server answered: ``code`` is its error code (``"unknown_session"``) or,
    for a closed stream, the websocket close code; ``status`` the HTTP status, if any."""

    def __init__(self, code: str | int, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class NotFound(VidserveError):
    """404: no such session or model."""


class Gone(VidserveError):
    """410: the session was deleted or expired."""


class InvalidRequest(VidserveError):
    """400, 413 or 422: the request itself is wrong; resending it will not help."""


class Overloaded(VidserveError):
    """429, or a stream closed with 1013: retried, and raised once retries are spent."""


class NotReady(VidserveError):
    """503: engines still loading (or failed to)."""


class JobFailed(VidserveError):
    """A clip job ended without a result: ``code`` is ``job_failed`` or ``job_cancelled``."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job_{job.state}", job.error or job.state)
        self.job = job


class FrameRejected(VidserveError):
    """A stream answered one frame (or a control, ``frame_index`` None) with an error; the
    stream goes on."""

    def __init__(self, code: str, message: str, frame_index: int | None) -> None:
        super().__init__(code, message)
        self.frame_index = frame_index


class StreamClosed(VidserveError):
    """The server closed the websocket: ``code`` is the close code, ``reason`` its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason or "stream closed")
        self.reason = reason


class StreamNotFound(StreamClosed, NotFound):
    """Close 4404: no such session (catchable as NotFound too)."""


class StreamGone(StreamClosed, Gone):
    """Close 4410: the session was deleted or expired (catchable as Gone too)."""


_BY_STATUS: dict[int, type[VidserveError]] = {
    400: InvalidRequest,
    404: NotFound,
    410: Gone,
    413: InvalidRequest,
    422: InvalidRequest,
    429: Overloaded,
    503: NotReady,
}

CLOSE_NOT_FOUND = 4404
CLOSE_GONE = 4410
CLOSE_TRY_AGAIN_LATER = 1013


def error_from_body(status: int, body: Any, text: str = "") -> VidserveError:
    """The typed error for an HTTP error answer ``{"error": {"code", "message"}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "http_error")), str(error.get("message", ""))
    else:  # e.g. /readyz's own body, or a proxy's page
        code, message = ("not_ready" if status == 503 else "http_error"), str(error or text or status)
    return _BY_STATUS.get(status, VidserveError)(code, message, status)


def stream_closed(code: int | None, reason: str) -> StreamClosed:
    """The typed error for a close frame (``code`` None: the connection dropped)."""
    if code == CLOSE_NOT_FOUND:
        return StreamNotFound(code, reason)
    if code == CLOSE_GONE:
        return StreamGone(code, reason)
    return StreamClosed(1006 if code is None else code, reason)
