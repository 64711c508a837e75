"""``/v1/sessions/{id}/stream``: the websocket a live client streams frames over. The
session's task gives the handler (``Task.stream``); the protocol is in docs/protocol.md."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from server import logs
from server.access import SUBPROTOCOL, Unauthorized, offered_protocols
from server.api.deps import get_caller
from server.api.framing import CloseCode, close
from server.sessions import SessionExpired, SessionNotFound, SessionState
from server.state import ServerState

log = logging.getLogger(__name__)
router = APIRouter(tags=["sessions"])


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(ws: WebSocket, session_id: str) -> None:
    state: ServerState = ws.app.state.server
    logs.session_id.set(session_id[:64])
    # why before any check: a close code with a reason needs an open socket; a browser that
    # sent its key as a subprotocol gets ours back (never its key)
    offered = offered_protocols(ws.headers)
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    refused = ws.scope.get("state", {}).get("access_error")
    if refused is not None:
        code = CloseCode.UNAUTHORIZED if isinstance(refused, Unauthorized) else CloseCode.FORBIDDEN_ORIGIN
        await close(ws, code, str(refused))
        return
    try:
        session = state.sessions.get(session_id, get_caller(ws))
    except SessionNotFound as exc:
        await close(ws, CloseCode.UNKNOWN_SESSION, str(exc))
        return
    except SessionExpired as exc:
        await close(ws, CloseCode.SESSION_GONE, str(exc))
        return
    if session.core.state is SessionState.STREAMING:
        await close(ws, CloseCode.ALREADY_STREAMING, "another stream is attached to this session")
        return
    if not state.accepting:
        await close(ws, CloseCode.GOING_AWAY, "server shutting down")
        return
    session.core.state = SessionState.STREAMING
    state.active_streams += 1
    session.core.touch()
    try:
        await state.session_task(session).stream(state, ws, session).run()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("session %s: stream failed", session_id)
        await close(ws, CloseCode.INTERNAL_ERROR, "internal error; see the server log")
    finally:
        state.active_streams -= 1
        if session.core.state is SessionState.STREAMING:
            session.core.state = SessionState.OPEN
        session.core.touch()
