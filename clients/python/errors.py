"""Typed errors carrying the server's code and message (docs/protocol.md §1, §6, §7)."""

from __future__ import annotations

import re
from typing import Any

KEY_HINT = "pass api_key= to the client, or set VIDSERVE_API_KEY"


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


class QuotaExceeded(Overloaded):
    """429 ``quota_exceeded``: the API key holds all the sessions or jobs it may. ``quota`` is
    the limit (``max_sessions`` or ``max_jobs``), ``retry_after_s`` when the server says a
    place frees; raised at once when that is beyond the client's retry budget
    (``budget_s``, when that was why it gave up)."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None,
        retry_after_s: float | None,
        budget_s: float | None = None,
    ) -> None:
        found = re.search(r"\((max_\w+)\)", message)  # why: the server's message names it so
        self.quota: str | None = found.group(1) if found else None
        self.retry_after_s = retry_after_s
        when = "" if retry_after_s is None else f" (Retry-After: {retry_after_s:g} s"
        if when and budget_s is not None:
            when += f", more than this client's retry budget of {budget_s:g} s"
        super().__init__(code, f"{message}{when}{')' if when else ''}", status)
        self.message = message  # the server's words; str() adds the wait


class Unauthorized(VidserveError):
    """401: the server needs an API key, and none or an unknown one was sent."""

    def __init__(self, code: str | int, message: str, status: int | None = None) -> None:
        super().__init__(code, f"{message} ({KEY_HINT})", status)
        self.message = message  # the server's words; str() adds what to do


class Forbidden(VidserveError):
    """403: e.g. ``origin_not_allowed``, a browser origin the server does not allow."""


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


class StreamUnauthorized(StreamClosed, Unauthorized):
    """Close 4401: no API key, or an unknown one (catchable as Unauthorized too)."""

    def __init__(self, code: int, reason: str) -> None:
        VidserveError.__init__(self, code, f"{reason or 'unauthorized'} ({KEY_HINT})")
        self.message = self.reason = reason


class StreamForbidden(StreamClosed, Forbidden):
    """Close 4403: an origin the server does not allow (catchable as Forbidden too)."""


_BY_STATUS: dict[int, type[VidserveError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
    413: InvalidRequest,
    422: InvalidRequest,
    429: Overloaded,
    503: NotReady,
}

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_GONE = 4410
CLOSE_TRY_AGAIN_LATER = 1013


def error_from_body(
    status: int,
    body: Any,
    text: str = "",
    *,
    retry_after_s: float | None = None,
    budget_s: float | None = None,
) -> VidserveError:
    """The typed error for an HTTP error answer ``{"error": {"code", "message"}}``;
    ``retry_after_s``: its Retry-After, and ``budget_s`` the retry budget it went past, for a
    quota's error."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "http_error")), str(error.get("message", ""))
    else:  # e.g. /readyz's own body, or a proxy's page
        code, message = ("not_ready" if status == 503 else "http_error"), str(error or text or status)
    if status == 429 and code == "quota_exceeded":
        return QuotaExceeded(code, message, status, retry_after_s, budget_s)
    return _BY_STATUS.get(status, VidserveError)(code, message, status)


def stream_closed(code: int | None, reason: str) -> StreamClosed:
    """The typed error for a close frame (``code`` None: the connection dropped)."""
    if code == CLOSE_NOT_FOUND:
        return StreamNotFound(code, reason)
    if code == CLOSE_GONE:
        return StreamGone(code, reason)
    if code == CLOSE_UNAUTHORIZED:
        return StreamUnauthorized(code, reason)
    if code == CLOSE_FORBIDDEN:
        return StreamForbidden(code, reason)
    return StreamClosed(1006 if code is None else code, reason)


def refused_access(exc: BaseException) -> bool:
    """The server refused who is asking (a key, an origin): retrying as is cannot help."""
    return isinstance(exc, (Unauthorized, Forbidden))
