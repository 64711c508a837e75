"""``/v1/sessions/{id}/stream``: the websocket a live client streams frames over. The
session's task gives the handler (``Task.stream``); the protocol is in docs/protocol.md."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from server import logs
from server.access import SUBPROTOCOL, Unauthorized, offered_protocols
from server.api.deps import get_caller
from server.api.errors import error_body
from server.api.framing import CloseCode, close
from server.sessions import BudgetExceeded, SessionExpired, SessionNotFound, SessionState
from server.sessions.persist import SessionElsewhere, StateRefused
from server.sessions.redis_store import StoreUnavailable
from server.sessions.store import Session
from server.state import NotReady, ServerState

log = logging.getLogger(__name__)
router = APIRouter(tags=["sessions"])


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(ws: WebSocket, session_id: str) -> None:
    state: ServerState = ws.app.state.server
    logs.session_id.set(session_id[:64])
    # why before any check: a close code with a reason needs an open socket; a browser that
    # sent its key as a subprotocol gets ours back (never its key)
    if is_handed_over(state, ws):
        # why HTTP: a proxy retries a refused handshake on another replica (nginx's
        # proxy_next_upstream http_503), which resumes the session from the state store
        body = error_body("not_ready", "this replica is shutting down; another one resumes the session")
        await ws.send_denial_response(JSONResponse(body, status_code=503, headers={"Retry-After": "1"}))
        return
    offered = offered_protocols(ws.headers)
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    refused = ws.scope.get("state", {}).get("access_error")
    if refused is not None:
        code = CloseCode.UNAUTHORIZED if isinstance(refused, Unauthorized) else CloseCode.FORBIDDEN_ORIGIN
        await close(ws, code, str(refused))
        return
    session = await _find(state, ws, session_id)
    if session is None:
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


def is_handed_over(state: ServerState, ws: WebSocket) -> bool:
    """Draining with a state store, where the server can refuse a handshake over HTTP."""
    can_deny = "websocket.http.response" in ws.scope.get("extensions", {})
    return not state.accepting and state.persistence is not None and can_deny


async def _find(state: ServerState, ws: WebSocket, session_id: str) -> Session | None:
    """The session to attach to (restored from the state store if need be), or None once the
    socket was closed with the reason."""
    try:
        return await state.find_session(session_id, get_caller(ws))
    except SessionNotFound as exc:
        await close(ws, CloseCode.UNKNOWN_SESSION, str(exc))
    except SessionExpired as exc:
        await close(ws, CloseCode.SESSION_GONE, str(exc))
    except SessionElsewhere as exc:
        await close(ws, CloseCode.ALREADY_STREAMING, str(exc))
    except StateRefused as exc:
        await close(ws, CloseCode.STATE_INCOMPATIBLE, str(exc))
    except (NotReady, StoreUnavailable) as exc:
        await close(ws, CloseCode.TRY_AGAIN_LATER, str(exc))
    except BudgetExceeded as exc:
        await close(ws, CloseCode.TRY_AGAIN_LATER, str(exc))
    return None
