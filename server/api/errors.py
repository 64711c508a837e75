"""Every error leaves as JSON: ``{"error": {"code": ..., "message": ...}}``.

Exceptions map to HTTP statuses here, once, for every route: the server's own, and each
task's client errors (``Task.errors``). An exception that carries ``status`` and ``code``
answers with them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server.jobs.store import JobLimitReached, JobNotFound
from server.media import MediaError
from server.scheduler import Cancelled, Overloaded, TooLarge
from server.sessions import BudgetExceeded, SessionExpired, SessionLimitReached, SessionNotFound
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
)


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


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
    if error.status in (429, 503):  # why 1 by default: a full queue or a loading model clears soon
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s or 1)))}
    return JSONResponse(error_body(error.code, str(error)), status_code=error.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return JSONResponse(error_body("invalid_request", summary, details=details), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    known = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    code = known.get(exc.status_code, f"http_{exc.status_code}")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI, task_errors: Sequence[ErrorCode]) -> None:
    """The handlers, with the tasks' client errors after the server's own."""
    table = (*STATUS, *task_errors)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        error = to_api_error(exc, table)
        if error.status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _response(error)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    # why each type by name: Starlette re-raises (and logs) what only the Exception handler takes
    for kind in (ApiError, SessionExpired, *(e.kind for e in table), Exception):
        app.add_exception_handler(kind, domain_error)
