"""``/v1/sessions``: open, inspect and close streaming sessions of any task. The body of
``POST`` is one of the tasks' ``session_body`` models, told apart by its ``task``."""

# why no `from __future__ import annotations`: FastAPI reads the routes' parameter types at
# run time, and the body and form types are built per app from its tasks (locals, not globals)

from collections.abc import Sequence
from typing import Annotated, Any, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from server.access import Caller, QuotaExceeded
from server.api.deps import CallerDep, State
from server.api.views import CreatedSessionView, SessionView
from server.sessions import SessionLimitReached, SessionState
from server.tasks.base import Task


def stream_url(state: State, request: Request, session_id: str) -> str:
    base = state.settings.public_url or str(request.base_url)
    base = base.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/v1/sessions/{session_id}/stream"


def check_session_quota(state: State, caller: Caller) -> None:
    """A key with all the sessions it may have open waits until one closes or idles out."""
    held = state.sessions.owned_by(caller.name)
    if caller.max_sessions is not None and held >= caller.max_sessions:
        raise QuotaExceeded(
            f"key {caller.name!r} has {held} sessions open, its quota (max_sessions); close one "
            "or wait for one to idle out",
            state.sessions.next_free_s(caller.name),
        )


async def _admit(state: State, task: Task[Any, Any], session: Any) -> None:
    """A new session joins this server's; with a state store it is written there instead,
    for whichever replica its id is routed to (and released here)."""
    if state.persistence is None:
        state.sessions.add(session)
        return
    check_room(state)
    await state.persistence.park_new(state, session)
    state.budget.release(session.id)
    await task.close_session(state, session)


def check_room(state: State) -> None:
    """The session limit, checked before a session is written to the state store."""
    if len(state.sessions) >= state.sessions.max_sessions:
        raise SessionLimitReached(
            f"{len(state.sessions)} sessions are open; the limit is {state.sessions.max_sessions}"
        )


def session_body(tasks: Sequence[Task[Any, Any]]) -> Any:
    """The union of the tasks' session bodies, discriminated by ``task``."""
    bodies = tuple(t.session_body for t in tasks)
    if len(bodies) == 1:
        return bodies[0]
    return Annotated[Union[bodies], Field(discriminator="task")]  # noqa: UP007


def build_router(tasks: Sequence[Task[Any, Any]]) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
    SessionCreate = session_body(tasks)

    @router.post("", status_code=201, summary="Open a session", response_model=CreatedSessionView)
    async def create_session(
        body: SessionCreate,  # type: ignore[valid-type]
        state: State,
        request: Request,
        caller: CallerDep,
    ) -> JSONResponse:
        """The body is one task's session settings, told apart by `task` (docs/protocol.md
        §1, §10, §11); an unknown field is refused. Answers 201 with the session, its `url`,
        the `stream_url` of the websocket to attach, `ttl_s` (how long it may idle), and a
        `Location` header. Errors: 404 `unknown_model`; 422 for a field out of bounds; 429
        `too_many_sessions`, `memory_budget_exceeded` (the session's worst-case memory does
        not fit) or `quota_exceeded` (the key's sessions); 503 while the model loads or the
        server drains."""
        assert isinstance(body, BaseModel)
        task = state.task_named(getattr(body, "task"))  # noqa: B009
        service = state.service(getattr(body, "model", None), task)
        check_session_quota(state, caller)
        session = await task.open_session(state, body, service)
        session.core.owner = caller.name
        try:
            await _admit(state, task, session)
        except Exception:
            state.budget.release(session.id)
            await task.close_session(state, session)
            raise
        url = f"/v1/sessions/{session.id}"
        content = {
            **session.public(),
            "url": url,
            "stream_url": stream_url(state, request, session.id),
            "ttl_s": state.settings.session_ttl_s,
        }
        return JSONResponse(content, status_code=201, headers={"Location": url})

    @router.get("/{session_id}", summary="A session's state and counters", response_model=SessionView)
    async def get_session(session_id: str, state: State, caller: CallerDep) -> dict[str, object]:
        """The session's `state` (`open`, or `streaming` with a websocket attached), its
        counters (`frames_in`, `frames_done`, `frames_failed`, `in_flight`, `dropped`),
        `idle_s`, and its task's own settings and counters. Reading it does not keep it
        alive. 404 `unknown_session` (or another key's); 410 once it was deleted or expired."""
        return (await state.find_session(session_id, caller)).public()

    @router.delete("/{session_id}", summary="Close a session and free its state", response_model=SessionView)
    async def delete_session(session_id: str, state: State, caller: CallerDep) -> dict[str, object]:
        """Close the session: its queued engine work is dropped between batches, its memory
        freed, and an attached stream ends with close code 1000. Answers the session as it
        was closed (`state: closed`). 404 `unknown_session`; 410 when it was already closed
        or had expired."""
        await state.find_session(session_id, caller)  # why: one kept in the state store is closed too
        session = await state.sessions.close(session_id, SessionState.CLOSED, "deleted by the client", caller)
        return session.public()

    return router
