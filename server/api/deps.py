"""Route dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from server.api.errors import ApiError, error_body
from server.state import ServerState


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(get_state)]


async def read_upload(state: ServerState, upload: UploadFile, name: str) -> bytes:
    data = await upload.read(state.settings.max_message_bytes + 1)
    if len(data) > state.settings.max_message_bytes:
        raise ApiError(
            413, "payload_too_large", f"{name} is larger than {state.settings.max_message_bytes} bytes"
        )
    return data


JOBS_PATH = "/v1/jobs"  # the one route whose body is a whole video
MULTIPART_SLACK = 1 << 20  # why: boundaries and part headers on top of the files themselves
PARTS_PER_REQUEST = 3  # why: the most files one other request carries (a frame, a mask, an RLE)


async def refuse_oversized(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Refuse a body by its Content-Length before Starlette spools it to disk: a job's video
    up to VIDSERVE_MAX_JOB_UPLOAD_BYTES, any other body up to a few messages. (A chunked body
    has no length; its parts are still bounded when read.)"""
    if request.method in ("POST", "PUT"):
        settings = get_state(request).settings
        is_job_upload = request.url.path.rstrip("/") == JOBS_PATH
        per_part = (
            settings.max_job_upload_bytes if is_job_upload else PARTS_PER_REQUEST * settings.max_message_bytes
        )
        limit = per_part + MULTIPART_SLACK
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            body = error_body("payload_too_large", f"the request body is larger than {limit} bytes")
            return JSONResponse(body, status_code=413)
    return await call_next(request)
