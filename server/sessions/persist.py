"""Sessions that outlive their replica: checkpoints to the state store, a lease so one replica
at a time serves a session, and resume on any replica.

With ``VIDSERVE_STATE_STORE`` set:
- a new session is written to the store and not kept here: whichever replica the proxy
  sends its id to (a consistent hash) restores it on first use and takes its lease;
- a replica renews the leases of the sessions it holds; one whose lease lapsed lets the
  session go (its stream closes with 1012) rather than serve it beside another replica;
- a session with no stream for a few lease periods is checkpointed and let go, and one asked
  for on another replica as soon as no stream is attached, so a replica that comes back
  after a failover gets its sessions back as clients return;
- ``VIDSERVE_CHECKPOINT_EVERY`` checkpoints while streaming; a drain checkpoints every
  session and releases its lease before its stream closes with 1012;
- a client's DELETE, or idle expiry, deletes the stored state and leaves a mark, so every
  replica answers 410 as this one does.

Checkpoints are taken between frames (``Task.save_state``: cheap, the tensors are shared)
and packed and written off the event loop, one at a time per session, the newest winning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.state_file import StateFileError, pack, read_header, unpack
from models.weights.fetch import sha256_file
from server.access import ANONYMOUS, Caller
from server.sessions.redis_store import RedisStateStore
from server.sessions.store import Session, SessionCore, SessionExpired, SessionNotFound, SessionState
from server.tasks.base import SavedState

if TYPE_CHECKING:
    from server.state import ServerState

log = logging.getLogger(__name__)

# why 3: a detached session is let go after three lease periods without a stream, long
# enough for a client's reconnect, short enough that failback follows a returning replica
PARK_AFTER_LEASES = 3


class SessionElsewhere(RuntimeError):
    """Another replica holds the session's lease: ask again once it is released or lapses."""

    status = 409
    code = "session_active_elsewhere"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StateRefused(RuntimeError):
    """A stored state this replica will not restore (another model or weights, a version it
    cannot read, corrupt bytes); the message says which."""

    status = 409
    code = "state_incompatible"


@dataclass
class Checkpoint:
    """What one session's latest checkpoint was."""

    frame: int | None  # frame_index it ends on
    nbytes: int  # size in the store
    seconds: float  # pack and write


@dataclass
class _Writer:
    """A session's checkpoints on their way: one written at a time, the newest pending."""

    pending: Callable[[], Awaitable[Checkpoint]] | None = None
    running: asyncio.Task[None] | None = None
    last: Checkpoint | None = None


def default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Persistence:
    """The state store as the server uses it: one per process."""

    store: RedisStateStore
    replica: str  # this replica's name in leases
    lease_ttl_s: float
    checkpoint_every: int  # memory writes between checkpoints while streaming; 0: off
    session_ttl_s: float  # stored states and gone marks expire with the session TTL
    _weights: dict[str, str] = field(default_factory=dict)  # model → its weights' sha256
    _writers: dict[str, _Writer] = field(default_factory=dict)
    _resuming: dict[str, asyncio.Lock] = field(default_factory=dict)
    checkpoints: int = 0  # written since start
    restores: int = 0  # sessions resumed here since start

    # --- the header ------------------------------------------------------------------------

    async def weights_sha256(self, state: ServerState, model: str) -> str:
        """The sha256 of the weights ``model`` runs on here (computed once, off the loop)."""
        if model not in self._weights:
            from server.engines.loading import resolve_weights

            path = await asyncio.to_thread(resolve_weights, state.settings, model)
            self._weights[model] = await asyncio.to_thread(sha256_file, path)
        return self._weights[model]

    def _header(self, session: Session, saved: SavedState) -> dict[str, Any]:
        core = session.core
        return {
            "task": session.task,
            "model": session.model,
            "weights_sha256": self._weights.get(session.model),  # filled in by the write if not known
            "settings": saved.settings,
            "fields": saved.fields,
            "session": {
                "id": core.id,
                "created_at": core.created_at,
                "owner": core.owner,
                "frames_in": core.frames_in,
                "frames_done": core.frames_done,
                "frames_failed": core.frames_failed,
                "last_index": core.last_index,
            },
            "replica": self.replica,
            "saved_at": time.time(),
        }

    # --- checkpoints -----------------------------------------------------------------------

    def take(self, state: ServerState, session: Session) -> Callable[[], Awaitable[Checkpoint]]:
        """The session's state now (cheap, between frames), as a write to run later."""
        saved = state.session_task(session).save_state(session)
        frame = session.core.last_index
        header = self._header(session, saved)

        async def write() -> Checkpoint:
            started = time.perf_counter()
            header["weights_sha256"] = await self.weights_sha256(state, session.model)
            blob = await asyncio.to_thread(pack, saved.tensors, header)
            try:
                await self.store.put(session.id, blob, self.session_ttl_s)
            except Exception:
                state.metrics.checkpoints.labels(session.task, "failed").inc()
                raise
            done = Checkpoint(frame, len(blob), time.perf_counter() - started)
            self._count(state, session, done)
            log.info("session %s: checkpoint at frame %s, %d bytes", session.id, frame, len(blob))
            return done

        return write

    def _count(self, state: ServerState, session: Session, done: Checkpoint) -> None:
        self.checkpoints += 1
        metrics = state.metrics
        metrics.checkpoints.labels(session.task, "ok").inc()
        metrics.checkpoint_bytes.labels(session.task).observe(done.nbytes)
        metrics.checkpoint_seconds.labels(session.task).observe(done.seconds)
        session.core.checkpoint = {
            "frame_index": done.frame,
            "bytes": done.nbytes,
            "seconds": round(done.seconds, 4),
            "at": time.time(),
        }

    async def checkpoint(self, state: ServerState, session: Session) -> Checkpoint:
        """Write the session's state now, after any checkpoint still on its way."""
        write = self.take(state, session)
        writer = self._writers.setdefault(session.id, _Writer())
        writer.pending = None  # why: this one is newer than any waiting
        if writer.running is not None:
            await asyncio.gather(writer.running, return_exceptions=True)
        writer.last = await write()
        return writer.last

    def after_frame(self, state: ServerState, session: Session) -> None:
        """A frame of the session was answered: count a memory write, checkpoint when due."""
        core = session.core
        core.resumed, core.resumed_from_frame = False, None  # why: its state has moved on since
        mark = state.session_task(session).checkpoint_mark(session)
        if mark != core.checkpoint_mark:
            core.checkpoint_mark = mark
            core.writes_since_checkpoint += 1
        is_due = self.checkpoint_every > 0 and core.writes_since_checkpoint >= self.checkpoint_every
        if not is_due or core.closed.is_set():
            return
        core.writes_since_checkpoint = 0
        writer = self._writers.setdefault(session.id, _Writer())
        writer.pending = self.take(state, session)
        if writer.running is None or writer.running.done():
            writer.running = asyncio.ensure_future(self._drain_writes(session.id, writer))

    async def _drain_writes(self, session_id: str, writer: _Writer) -> None:
        while writer.pending is not None:
            write, writer.pending = writer.pending, None
            try:
                writer.last = await write()
            except Exception:  # why: a failed checkpoint must not end the stream; the next may land
                log.exception("session %s: checkpoint failed", session_id)

    def last_checkpoint(self, session_id: str) -> Checkpoint | None:
        writer = self._writers.get(session_id)
        return None if writer is None else writer.last

    # --- opening, leases and letting go -----------------------------------------------------

    async def park_new(self, state: ServerState, session: Session) -> None:
        """A session just opened: written to the store, for whichever replica gets its id."""
        await self.checkpoint(state, session)

    async def let_go(self, state: ServerState, session: Session, reason: str) -> None:
        """Checkpoint the session, close it here as moved (its stream ends with 1012) and
        release its lease: the next request for it, on any replica, resumes it."""
        try:
            await self.checkpoint(state, session)
        except Exception:
            log.exception("session %s: checkpoint before letting go failed", session.id)
        with contextlib.suppress(SessionNotFound, SessionExpired):  # why: deleted by its client meanwhile
            await state.sessions.close(session.id, SessionState.MOVED, reason)

    async def on_close(self, state: ServerState, session: Session) -> None:
        """A session closed here: a moved one keeps its stored state, others lose it."""
        self._writers.pop(session.id, None)
        try:
            if session.core.state is not SessionState.MOVED:
                await self.store.delete(session.id)
                await self.store.mark_gone(
                    session.id, session.core.state.value, session.core.owner, self.session_ttl_s
                )
            await self.store.release(session.id, self.replica)
        except Exception:  # why: the close itself stands; the store's TTLs clean up the rest
            log.exception("session %s: updating the state store on close failed", session.id)

    async def keep_leases(self, state: ServerState) -> None:
        """Renew the leases of sessions held here, let go of detached idle ones; forever."""
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            try:
                await self._renew_round(state)
            except Exception:  # why: one bad round must not end renewal for the process's life
                log.exception("renewing session leases failed; trying again next round")

    async def _renew_round(self, state: ServerState) -> None:
        held = [s for s in state.sessions.all() if not s.core.closed.is_set()]
        wanted = await self.store.wanted([s.id for s in held if _is_detached(s)])
        for session in held:
            if not await self.store.renew(session.id, self.replica, self.lease_ttl_s):
                log.warning("session %s: lease lost; letting it go", session.id)
                await state.sessions.close(session.id, SessionState.MOVED, "lease lost to another replica")
            elif session.id in wanted and _is_detached(session):
                await self.let_go(state, session, "asked for on another replica")
            elif _is_parkable(session, self.lease_ttl_s):
                await self.let_go(state, session, "no stream attached; kept in the state store")

    async def drain(self, state: ServerState) -> None:
        """Every session checkpointed and let go (each stream ends with 1012)."""
        sessions = [s for s in state.sessions.all() if not s.core.closed.is_set()]
        await asyncio.gather(
            *(self.let_go(state, s, "server restarting; resume on any replica") for s in sessions),
            return_exceptions=True,
        )

    # --- resume -----------------------------------------------------------------------------

    async def resume(self, state: ServerState, session_id: str, caller: Caller = ANONYMOUS) -> Session:
        """The session restored from the store and leased to this replica; ``SessionNotFound``,
        ``SessionExpired``, ``SessionElsewhere`` or ``StateRefused`` otherwise."""
        lock = self._resuming.setdefault(session_id, asyncio.Lock())
        try:
            async with lock:  # why: two requests for one id here restore it once
                try:
                    return state.sessions.get(session_id, caller)
                except SessionNotFound:
                    return await self._restore(state, session_id, caller)
        finally:
            if not lock.locked():
                self._resuming.pop(session_id, None)

    async def _restore(self, state: ServerState, session_id: str, caller: Caller) -> Session:
        blob = await self.store.get(session_id)
        if blob is None:
            await self._raise_missing(session_id, caller)
        assert blob is not None
        header = _checked_header(blob, session_id)
        if not caller.owns(header["session"]["owner"]):
            raise SessionNotFound(f"no session {session_id[:64]}")
        task, service = self._service_for(state, header)
        await self._check_weights(state, header)
        if not await self.store.acquire(session_id, self.replica, self.lease_ttl_s):
            await self._raise_elsewhere(session_id)
        try:
            session = await self._rebuild(state, task, service, blob, header)
            state.sessions.add(session)
        except BaseException:
            state.budget.release(session_id)
            await self.store.release(session_id, self.replica)
            raise
        self.restores += 1
        state.metrics.restores.labels(session.task).inc()
        log.info("session %s: resumed from frame %s", session_id, session.core.resumed_from_frame)
        return session

    async def _rebuild(
        self, state: ServerState, task: Any, service: Any, blob: bytes, header: dict[str, Any]
    ) -> Session:
        tensors, _ = await asyncio.to_thread(unpack, blob)
        saved = SavedState(tensors, header["fields"], header["settings"])
        core = _core_from(header["session"])
        core.checkpoint = {  # why: GET shows the state's size in the store from the start
            "frame_index": core.last_index,
            "bytes": len(blob),
            "seconds": None,
            "at": header.get("saved_at"),
        }
        try:
            session: Session = await task.restore_session(state, service, saved, core)
        except (KeyError, ValueError, TypeError) as exc:
            raise StateRefused(f"session {core.id}: its stored state does not restore: {exc}") from exc
        return session

    def _service_for(self, state: ServerState, header: dict[str, Any]) -> tuple[Any, Any]:
        from server.state import UnknownModel

        model = header.get("model")
        try:
            task = state.task_named(str(header.get("task")))
            return task, state.service(str(model), task)
        except (StopIteration, UnknownModel) as exc:
            raise StateRefused(
                f"session {header['session']['id']} was saved by model {model!r} "
                f"({header.get('task')}), which this replica does not serve ({state.settings.models})"
            ) from exc

    async def _check_weights(self, state: ServerState, header: dict[str, Any]) -> None:
        model, saved = header["model"], header.get("weights_sha256")
        here = await self.weights_sha256(state, model)
        if saved != here:
            raise StateRefused(
                f"session {header['session']['id']} was saved by model {model} with weights "
                f"sha256 {str(saved)[:12]}…; this replica serves {model} with weights {here[:12]}…: "
                "its memory would not mean the same here"
            )

    async def _raise_missing(self, session_id: str, caller: Caller) -> None:
        gone = await self.store.gone(session_id)
        if gone is not None and caller.owns(gone[1]):
            raise SessionExpired(f"session {session_id[:64]} is {gone[0]}", SessionState(gone[0]))
        raise SessionNotFound(f"no session {session_id[:64]}")

    async def _raise_elsewhere(self, session_id: str) -> None:
        holder = await self.store.holder(session_id)
        await self.store.want(session_id, self.lease_ttl_s)
        who, wait = (holder.replica, holder.ms_left / 1000) if holder else ("another replica", 0.1)
        # why a third: a live holder lets a detached session go at its next renewal round
        wait = min(wait, self.lease_ttl_s / 3)
        raise SessionElsewhere(
            f"session {session_id[:64]} is active on {who}; try again in {wait:.1f} s, once its "
            "lease is released or lapses",
            max(0.1, wait),
        )


def _checked_header(blob: bytes, session_id: str) -> dict[str, Any]:
    try:
        header = read_header(blob)
    except StateFileError as exc:
        raise StateRefused(f"session {session_id[:64]}: {exc}") from exc
    if header.get("session", {}).get("id") != session_id:
        raise StateRefused(f"session {session_id[:64]}: the stored state is another session's")
    return header


def _core_from(fields: dict[str, Any]) -> SessionCore:
    now = time.monotonic()
    core = SessionCore(str(fields["id"]), float(fields["created_at"]), now)
    core.owner = fields["owner"]
    core.frames_in = int(fields["frames_in"])
    core.frames_done = int(fields["frames_done"])
    core.frames_failed = int(fields["frames_failed"])
    core.last_index = fields["last_index"]
    core.resumed_from_frame = fields["last_index"]
    core.resumed = True
    return core


def _is_detached(session: Session) -> bool:
    return session.core.state is SessionState.OPEN and session.core.in_flight == 0


def _is_parkable(session: Session, lease_ttl_s: float) -> bool:
    return _is_detached(session) and session.core.idle_for() > PARK_AFTER_LEASES * lease_ttl_s
