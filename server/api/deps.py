"""Route dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.state import ServerState


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(get_state)]
