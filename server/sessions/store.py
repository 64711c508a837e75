"""Where sessions live: creation under a limit, lookup, idle expiry, and closing.

A closed or expired session's id is remembered for a while, so that a client is told
"expired" rather than "unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from server.access import ANONYMOUS, Caller

GONE_REMEMBERED = 4096  # closed ids kept to tell "expired" from "unknown"


class SessionState(enum.Enum):
    OPEN = "open"  # created, no stream attached
    STREAMING = "streaming"  # a websocket is attached
    CLOSED = "closed"  # deleted by the client
    EXPIRED = "expired"  # idle past the TTL
    MOVED = "moved"  # checkpointed to the state store and let go here: any replica resumes it


class SessionNotFound(LookupError):
    """No session with this id ever existed here (or it is long gone)."""


class SessionExpired(LookupError):
    """The session existed and was closed or expired (``state`` says which)."""

    def __init__(self, message: str, state: SessionState) -> None:
        super().__init__(message)
        self.state = state


class SessionLimitReached(RuntimeError):
    """As many sessions are open as the server allows."""


class FrameOrderError(ValueError):
    """A frame_index that does not come after the session's last one."""

    code = "frame_index_not_increasing"


@dataclass
class SessionCore:
    """What every session has, whatever its task."""

    id: str  # opaque, unguessable
    created_at: float  # wall clock, seconds since the epoch
    last_activity: float  # time.monotonic() of the last message, connection or frame
    state: SessionState = SessionState.OPEN
    frames_in: int = 0  # frames received
    frames_done: int = 0  # frames answered with their results
    frames_failed: int = 0  # frames answered with an error naming them
    in_flight: int = 0  # frames received and not yet answered
    last_index: int | None = None  # the last frame_index taken, good frame or bad (kept across reconnects)
    owner: str | None = None  # the API key's name that opened it (None: an open server's)
    closed_reason: str | None = None  # why it was closed, once it is
    # with a state store, from a restore until the next frame is answered: the session came
    # back from a checkpoint, taken after frame ``resumed_from_frame`` (None: before any
    # frame), so a client knows which frames to send again
    resumed: bool = False
    resumed_from_frame: int | None = None
    # with a state store: the last checkpoint written (frame, bytes, seconds, at), for GET
    checkpoint: dict[str, object] | None = None
    checkpoint_mark: object = None  # the task's memory mark at the last frame (Task.checkpoint_mark)
    writes_since_checkpoint: int = 0  # memory writes since the last checkpoint
    # set when the session closes, so an attached stream wakes up and ends
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def dropped(self) -> int:
        """Frames received that got neither a result nor an error: every frame is answered, so
        this stays 0 unless a client disconnects before its answer could be sent."""
        return self.frames_in - self.frames_done - self.frames_failed - self.in_flight

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def next_index(self, given: int | None) -> int:
        """A frame's index: the one its client gave, else the last one + 1 (so numbering goes
        on across reconnects, and REST and a stream share it)."""
        if given is not None:
            return given
        return 0 if self.last_index is None else self.last_index + 1

    def take_index(self, index: int) -> None:
        """The frame is this session's ``index``-th; before any await, so concurrent frames
        get distinct indices. Raises ``FrameOrderError`` for an index that is not after the last."""
        if self.last_index is not None and index <= self.last_index:
            raise FrameOrderError(f"frame_index {index} is not after {self.last_index}")
        self.last_index = index

    def give_back_index(self, index: int, previous: int | None) -> None:
        """A frame taken as ``index`` was not run and is to be sent again (overloaded): its
        resend takes the same index, so numbering stays the client's."""
        if self.last_index == index:
            self.last_index = previous

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """A frame from its arrival to its answer: counted in, and in flight meanwhile (a drain
        waits for it, expiry leaves the session alone). The caller counts it done or failed."""
        self.frames_in += 1
        self.in_flight += 1
        self.touch()
        try:
            yield
        finally:  # why: a socket already gone must not leave the frame counted as in flight
            self.in_flight -= 1
            self.touch()

    def idle_for(self) -> float:
        return time.monotonic() - self.last_activity

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state.value,
            "created_at": self.created_at,
            "idle_s": round(self.idle_for(), 3),
            "frames_in": self.frames_in,
            "frames_done": self.frames_done,
            "frames_failed": self.frames_failed,
            "in_flight": self.in_flight,
            "dropped": self.dropped,
            "checkpoint": self.checkpoint,
            "resumed": self.resumed,
            "resumed_from_frame": self.resumed_from_frame,
        }


class Session(Protocol):
    core: SessionCore
    task: str
    model: str

    @property
    def id(self) -> str: ...

    def public(self) -> dict[str, object]: ...


def new_core(prefix: str = "") -> SessionCore:
    """A session's core with a fresh, unguessable id."""
    return SessionCore(prefix + secrets.token_urlsafe(12), time.time(), time.monotonic())


OnClose = Callable[["Session"], Awaitable[None]]


class SessionStore:
    """All open sessions of this server."""

    def __init__(self, max_sessions: int, ttl_s: float) -> None:
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._open: dict[str, Session] = {}
        self._gone: OrderedDict[str, tuple[SessionState, str | None]] = OrderedDict()  # and owner
        # called after a session closes, to cancel its queued work between batches
        self.on_close: list[OnClose] = []

    def __len__(self) -> int:
        return len(self._open)

    def count(self, task: str) -> int:
        return sum(1 for s in self._open.values() if s.task == task)

    def all(self) -> list[Session]:
        return list(self._open.values())

    def add(self, session: Session) -> None:
        if len(self._open) >= self.max_sessions:
            raise SessionLimitReached(
                f"{len(self._open)} sessions are open; the limit is {self.max_sessions}"
            )
        self._open[session.id] = session

    def owned_by(self, owner: str | None) -> int:
        """Open sessions of one key."""
        return sum(1 for s in self._open.values() if s.core.owner == owner)

    def next_free_s(self, owner: str | None) -> float:
        """Seconds until one of ``owner``'s sessions would idle out, at the soonest."""
        idle = [s.core.idle_for() for s in self._open.values() if s.core.owner == owner]
        return max(0.0, self.ttl_s - max(idle, default=0.0))

    def get(self, session_id: str, caller: Caller = ANONYMOUS) -> Session:
        """An open session of ``caller``'s; another key's is ``SessionNotFound`` as well, so
        its existence is never confirmed."""
        session = self._open.get(session_id)
        if session is not None and caller.owns(session.core.owner):
            return session
        gone = self._gone.get(session_id)
        if session is None and gone is not None and caller.owns(gone[1]):
            raise SessionExpired(f"session {session_id[:64]} is {gone[0].value}", gone[0])
        raise SessionNotFound(f"no session {session_id[:64]}")

    async def close(
        self, session_id: str, state: SessionState, reason: str, caller: Caller = ANONYMOUS
    ) -> Session:
        """Close a session: it stops taking frames, its stream ends, its queued work is cancelled."""
        session = self.get(session_id, caller)
        del self._open[session_id]
        session.core.state = state
        session.core.closed_reason = reason
        session.core.closed.set()
        if state is not SessionState.MOVED:  # why: a moved session is resumed, here too, not gone
            self._gone[session_id] = (state, session.core.owner)
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)
        for hook in self.on_close:
            await hook(session)
        return session

    async def expire_idle(self) -> list[str]:
        """Close every session idle for longer than the TTL; returns their ids."""
        expired = []
        for session in list(self._open.values()):
            # why checked again for each: closing one awaits its hooks, meanwhile another may
            # have been deleted by its client or have received a frame
            is_idle = session.core.idle_for() > self.ttl_s and session.core.in_flight == 0
            if session.id in self._open and is_idle:
                await self.close(session.id, SessionState.EXPIRED, f"idle for more than {self.ttl_s:g} s")
                expired.append(session.id)
        return expired

    async def close_all(self, reason: str, state: SessionState = SessionState.CLOSED) -> None:
        """Close every open session (drain, shutdown) at once: each waits for its scheduler's
        next batch boundary, and one after another they took a boundary each (issue 14)."""
        closing = [self.close(s.id, state, reason) for s in list(self._open.values())]
        await asyncio.gather(*closing, return_exceptions=True)  # why: one closed meanwhile is gone
