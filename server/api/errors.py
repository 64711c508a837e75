"""Every error leaves as JSON: ``{"error": {"code": ..., "message": ...}}``.

Domain exceptions map to HTTP statuses here, once, for every route.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from models.rife.inference import InterpolationInputError
from models.xmem.config import XMemConfigError
from models.xmem.inference_core import SegmentationInputError
from server.jobs.store import JobLimitReached, JobNotFound
from server.masks import MaskError
from server.media import MediaError
from server.scheduler import Cancelled, Overloaded, TooLarge
from server.sessions import BudgetExceeded, SessionExpired, SessionLimitReached, SessionNotFound
from server.state import NotReady, UnknownModel

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a route raises on purpose, with its status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# exception type → (HTTP status, error code); the message is the exception's own
STATUS: list[tuple[type[Exception], int, str]] = [
    (SessionNotFound, 404, "unknown_session"),
    (JobNotFound, 404, "unknown_job"),
    (JobLimitReached, 429, "too_many_jobs"),
    (SessionLimitReached, 429, "too_many_sessions"),
    (Overloaded, 429, "overloaded"),
    (UnknownModel, 404, "unknown_model"),
    (NotReady, 503, "not_ready"),
    (InterpolationInputError, 422, "invalid_argument"),
    (TooLarge, 422, "too_many_rows"),
    (SegmentationInputError, 422, "invalid_argument"),
    (XMemConfigError, 422, "invalid_argument"),
    (BudgetExceeded, 429, "memory_budget_exceeded"),
    (Cancelled, 409, "session_closed"),
]


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


def to_api_error(exc: Exception) -> ApiError:
    """The status and code a domain exception answers with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, MediaError):
        return ApiError(413 if exc.code == "image_too_large" else 400, exc.code, str(exc))
    if isinstance(exc, MaskError):
        return ApiError(422 if exc.code == "mask_size_mismatch" else 400, exc.code, str(exc))
    if isinstance(exc, SessionExpired):
        return ApiError(410, f"session_{exc.state.value}", str(exc))
    for kind, status, code in STATUS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return ApiError(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")


def _response(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status in (429, 503) else None
    return JSONResponse(error_body(error.code, str(error)), status_code=error.status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    error = to_api_error(exc)
    if error.status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _response(error)


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


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for kind in (ApiError, MediaError, MaskError, SessionExpired, *(k for k, _, _ in STATUS), Exception):
        app.add_exception_handler(kind, _domain_error)
