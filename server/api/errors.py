"""Every error leaves as JSON: ``{"error": {"code": ..., "message": ...}}``.

Exceptions map to HTTP statuses here, once, for every route: the server's own, and each
task's client errors (``Task.errors``). An exception that carries ``status`` and ``code``
answers with them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.access import QuotaExceeded
from server.jobs.store import JobLimitReached, JobNotFound
from server.media import MediaError
from server.scheduler import Cancelled, Overloaded, TooLarge
from server.sessions import BudgetExceeded, SessionExpired, SessionLimitReached, SessionNotFound
from server.sessions.persist import SessionElsewhere, StateRefused
from server.sessions.redis_store import StoreUnavailable
from server.sessions.store import FrameOrderError
from server.state import NotReady, UnknownModel
from server.tasks.base import ErrorCode

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a route raises on purpose, with its status and code."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s  # for 429 and 503: when trying again may work


# the server's own exceptions → (HTTP status, error code); the message is the exception's
STATUS: tuple[ErrorCode, ...] = (
    ErrorCode(MediaError, 400, "invalid_image"),  # its own status and code win (media.py)
    ErrorCode(SessionNotFound, 404, "unknown_session"),
    ErrorCode(JobNotFound, 404, "unknown_job"),
    ErrorCode(JobLimitReached, 429, "too_many_jobs"),
    ErrorCode(SessionLimitReached, 429, "too_many_sessions"),
    ErrorCode(Overloaded, 429, "overloaded"),
    ErrorCode(UnknownModel, 404, "unknown_model"),
    ErrorCode(NotReady, 503, "not_ready"),
    ErrorCode(TooLarge, 422, "too_many_rows"),
    ErrorCode(FrameOrderError, 422, "frame_index_not_increasing"),
    ErrorCode(BudgetExceeded, 429, "memory_budget_exceeded"),
    ErrorCode(Cancelled, 409, "session_closed"),
    ErrorCode(QuotaExceeded, 429, "quota_exceeded"),  # its Retry-After is its own (access.py)
    ErrorCode(SessionElsewhere, 409, "session_active_elsewhere"),  # with a Retry-After: its lease's
    ErrorCode(StateRefused, 409, "state_incompatible"),
    ErrorCode(StoreUnavailable, 503, "state_store_unavailable"),
)


# why: a message can quote what the client sent (a model name, a list); a 190 MiB body must
# not come back in its 404, nor fill a log line (issue 14)
MAX_MESSAGE_CHARS = 500
MAX_DETAILS = 20  # validation errors listed per answer


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": clip(message), **extra}}


def to_api_error(exc: Exception, table: Sequence[ErrorCode] = STATUS) -> ApiError:
    """The status and code an exception answers with."""
    if isinstance(exc, ApiError):
        return exc
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    if isinstance(status, int) and isinstance(code, str):
        return ApiError(status, code, str(exc), getattr(exc, "retry_after_s", None))
    if isinstance(exc, SessionExpired):
        return ApiError(410, f"session_{exc.state.value}", str(exc))
    for entry in table:
        if isinstance(exc, entry.kind):
            return ApiError(entry.status, entry.code, str(exc))
    return ApiError(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")


def _response(error: ApiError) -> JSONResponse:
    headers = None
    if error.status in (429, 503) or error.retry_after_s is not None:
        # why 1 by default: a full queue or a loading model clears soon
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s or 1)))}
    return JSONResponse(error_body(error.code, str(error)), status_code=error.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = [
        {
            "field": clip(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), 100),
            "message": clip(e["msg"], 200),
        }
        for e in errors[:MAX_DETAILS]
    ]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    if len(errors) > MAX_DETAILS:
        summary += f"; and {len(errors) - MAX_DETAILS} more"
    return JSONResponse(error_body("invalid_request", summary, details=details), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    known = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    code = known.get(exc.status_code, f"http_{exc.status_code}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # why: Starlette lists the first matching route's methods only
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some operation of this path takes, from the app's own OpenAPI paths (a
    path can have a route per method, and routers nest)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install(app: FastAPI, task_errors: Sequence[ErrorCode]) -> None:
    """The handlers, with the tasks' client errors after the server's own."""
    table = (*STATUS, *task_errors)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        error = to_api_error(exc, table)
        is_unavailable = error.status == 503  # why: loading or draining, said to the client; not a bug
        if is_unavailable:
            log.info("%s %s: 503 %s", request.method, clip(request.url.path, 200), clip(str(error), 200))
        elif error.status >= 500:
            log.error("%s %s failed", request.method, clip(request.url.path, 200), exc_info=exc)
        return _response(error)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    # why each type by name, and no handler for Exception: Starlette answers that one from its
    # outermost middleware and then re-raises, so the 500 was neither counted nor tagged with
    # its request id, and uvicorn dropped the connection; ServerErrors answers it instead
    for kind in (ApiError, SessionExpired, *(e.kind for e in table)):
        app.add_exception_handler(kind, domain_error)


class ServerErrors:
    """ASGI middleware: an exception no handler took is a server bug, answered 500 in JSON
    (inside the request counter and the request-id tagging, so every 5xx is counted and
    tagged) and logged with its traceback; the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("%s %s failed", scope.get("method"), clip(scope.get("path", ""), 200), exc_info=exc)
            if started:  # why: half an answer was sent; only closing the connection is left
                raise
            body = error_body("internal_error", f"internal error ({type(exc).__name__}); see the server log")
            await JSONResponse(body, status_code=500)(scope, receive, send)
