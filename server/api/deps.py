"""Route dependencies."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from fastapi import Depends, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.access import ANONYMOUS, Caller
from server.api.errors import ApiError, error_body
from server.settings import Settings
from server.state import ServerState


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(get_state)]


def get_caller(connection: HTTPConnection) -> Caller:
    """Who the request comes from (``server.access.Access`` put it there)."""
    caller: Caller = connection.scope.get("state", {}).get("caller", ANONYMOUS)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


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


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit; FastAPI lets HTTPExceptions
    through its body parsing, so the route answers 413 instead of 'error parsing the body'."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """Bounds every POST/PUT body before Starlette spools it to disk: a job's video up to
    VIDSERVE_MAX_JOB_UPLOAD_BYTES, any other body up to a few messages. A declared
    Content-Length over the limit is refused unread; a chunked body (no length) is cut off
    as soon as it passes the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        server = scope["app"].state.server
        limit = body_limit(server.settings, scope["path"], server.video_routes)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _refuse(limit, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, bounded, send)


def body_limit(settings: Settings, path: str, video_routes: Collection[str] = ()) -> int:
    """The most a body may hold: a job's video (and a mask) on the routes that take whole
    videos, a few messages anywhere else."""
    is_video_upload = path.rstrip("/") in (JOBS_PATH, *video_routes)
    if is_video_upload:  # the video, and a segmentation job's mask
        return settings.max_job_upload_bytes + settings.max_message_bytes + MULTIPART_SLACK
    return PARTS_PER_REQUEST * settings.max_message_bytes + MULTIPART_SLACK


async def _refuse(limit: int, send: Send) -> None:
    body = error_body("payload_too_large", f"the request body is larger than {limit} bytes")
    await JSONResponse(body, status_code=413)({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
