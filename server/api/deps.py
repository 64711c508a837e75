"""Route dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, UploadFile

from server.api.errors import ApiError
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
