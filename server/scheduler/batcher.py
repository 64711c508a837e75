"""A dynamic batcher per engine, on the vLLM v1 contract.

Sessions and requests ``submit`` work; the scheduler loop decides which queued requests
run together (``schedule`` → a ``ScheduledBatch``), the engine side executes that batch
in a worker thread, and results flow back to the awaiting futures. Cancels and closes
are queued and applied between batches, never in the middle of one.

The scheduler is generic over the payload (a task's row or frame: whatever one unit of its
engine work is). It knows nothing of onnxruntime, torch or websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

# why: bounds how long a batch waits for announced work (a frame still being decoded);
# decoding and preparing a 4K frame takes about this long on one CPU core
MAX_HOLD_S = 0.25

P = TypeVar("P")  # what one request carries to the engine
R = TypeVar("R")  # what the engine gives back for it
P_contra = TypeVar("P_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class Priority(IntEnum):
    """Who goes first when the engine is free: lower runs first."""

    LIVE = 0  # sessions and REST calls: someone is waiting on this frame
    BATCH = 1  # clip jobs: run only when no live work is queued, so streams keep their latency


class Overloaded(RuntimeError):
    """The engine's queue is full; the caller should retry later (HTTP 429, close 1013)."""


class ShuttingDown(Overloaded):
    """The scheduler is stopping: unlike a full queue, retrying will not help (still a 429
    to clients that cannot tell, as before)."""


class TooLarge(ValueError):
    """More payloads at once than the queue can ever hold; retrying will not help."""


class Cancelled(RuntimeError):
    """The request's session was closed, deleted or expired before its batch ran."""


class BatchExecutor(Protocol[P_contra, R_co]):
    """The engine side: runs one batch, in a worker thread, one result per payload in order.

    A batch that raises must leave no trace (its payloads can run again): the scheduler then
    runs its payloads one by one, so only the payload that fails alone gets the error.
    """

    def execute(self, payloads: Sequence[P_contra]) -> Sequence[R_co]: ...


@dataclass
class Request(Generic[P, R]):
    """One unit of queued work and the future its submitter awaits."""

    owner: str  # session id (or one-off request id): the unit cancels apply to
    key: Hashable  # requests batch together only when their keys are equal (their engine call's shape)
    payload: P
    future: asyncio.Future[R]
    enqueued_at: float  # time.monotonic() at submit, for the delay window and queue-time metrics
    priority: Priority = Priority.LIVE  # live work is scheduled before batch (job) work


@dataclass
class ScheduledBatch(Generic[P, R]):
    """What one engine call runs, as decided by the scheduler."""

    batch_id: int  # increasing per scheduler, for logs and tests
    key: Hashable  # the shared key of every request in it
    requests: list[Request[P, R]]  # in submit order: each owner's requests keep their order


@dataclass
class BatchStats:
    """What observers (metrics, tests) learn of each executed batch."""

    batch_id: int
    size: int
    owners: list[str]
    seconds: float  # engine time, excluding the queue
    ok: bool


@dataclass
class SchedulerConfig:
    max_batch_size: int  # most requests in one engine call
    max_queue_delay_s: float  # how long the oldest request may wait for a fuller batch
    max_queue_size: int  # queued requests of one priority before submit raises Overloaded


@dataclass
class _Control:
    """A state change applied between batches."""

    owner: str
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler(Generic[P, R]):
    """One engine's queue, its batching policy and its loop."""

    def __init__(
        self,
        name: str,
        executor: BatchExecutor[P, R],
        config: SchedulerConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.name = name
        self.executor = executor
        self.config = config
        self.on_batch = on_batch
        self._queue: deque[Request[P, R]] = deque()
        self._controls: deque[_Control] = deque()
        self._wakeup = asyncio.Event()
        self._ids = itertools.count(1)
        # why one thread: an engine runs one batch at a time; more would just contend for it
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # owners that announced work (a frame being decoded) and have not submitted it yet
        self._expected: set[str] = set()
        # when the engine last finished a batch: sessions it answered come back about now
        self._free_since = time.monotonic()
        self._busy = False  # a batch is on the engine now

    # --- the submitting side ----------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the scheduler runs on (where its futures live)."""
        assert self._task is not None, "the scheduler has not started"
        return self._task.get_loop()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def submit(
        self, owner: str, key: Hashable, payloads: Sequence[P], priority: Priority = Priority.LIVE
    ) -> list[asyncio.Future[R]]:
        """Queue ``payloads`` together (all or none) and return one future per payload.

        Raises ``Overloaded`` when they do not fit in the queue. Each priority has its own
        bound, so queued job rows never make a live stream see 429.
        """
        self.check_room(len(payloads), priority)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        requests = [Request(owner, key, p, loop.create_future(), now, priority) for p in payloads]
        self._queue.extend(requests)
        self._expected.discard(owner)
        self._wakeup.set()
        return [r.future for r in requests]

    def check_room(self, count: int, priority: Priority = Priority.LIVE) -> None:
        """Raise ``Overloaded`` (or ``TooLarge``, ``ShuttingDown``) unless ``count`` more
        payloads of ``priority`` fit now: what ``submit`` checks, for work that must know
        before it starts (a frame is refused before any of its rows runs)."""
        if self._stopping:
            raise ShuttingDown(f"{self.name} is shutting down")
        if count > self.config.max_queue_size:
            raise TooLarge(
                f"{count} rows at once never fit {self.name}'s queue of {self.config.max_queue_size}"
            )
        queued = sum(r.priority == priority for r in self._queue)
        if queued + count > self.config.max_queue_size:
            raise Overloaded(f"{self.name} queue is full ({queued} of {self.config.max_queue_size} queued)")

    def expect(self, owner: str) -> None:
        """``owner`` will submit soon (its frame is being decoded): a batch may wait for it."""
        self._expected.add(owner)

    def unexpect(self, owner: str) -> None:
        """``owner`` submitted, or will not after all."""
        if owner in self._expected:
            self._expected.discard(owner)
            self._wakeup.set()

    async def cancel(self, owner: str) -> None:
        """Drop ``owner``'s queued requests at the next batch boundary, and wait for that."""
        control = _Control(owner)
        self._controls.append(control)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._apply_controls()
        await control.done.wait()

    # --- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"scheduler-{self.name}")

    async def stop(self) -> None:
        """Stop admitting, finish what is queued, then stop the loop and the worker thread."""
        self._stopping = True
        # why _busy too: cancelling the loop inside a batch would leave its futures unresolved
        while (self._queue or self._busy) and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._apply_controls()
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            self._apply_controls()
            batch = self.schedule()
            if batch is None:
                await self._wait_for_work()
                continue
            await self._execute(batch)

    async def _wait_for_work(self) -> None:
        """Sleep until something changes, or until the oldest request's wait runs out."""
        self._wakeup.clear()
        timeout = None
        if self._queue:
            now = time.monotonic()
            oldest = self._head().enqueued_at
            until_delay = self.config.max_queue_delay_s - (now - max(oldest, self._free_since))
            until_hold = self.config.max_queue_delay_s + MAX_HOLD_S - (now - oldest)
            timeout = max(0.0, until_delay if until_delay > 0 else until_hold)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def schedule(self) -> ScheduledBatch[P, R] | None:
        """The batch to run now, or None to keep waiting.

        The oldest request of the most urgent priority picks the key (first come, first
        served across shapes); every queued request with that key and priority joins, in
        order, up to ``max_batch_size``. Job rows never share a batch with live rows, so a
        live batch is never made longer by them. It runs when full; or once the oldest has
        waited ``max_queue_delay`` (counted from when the engine became free, as the sessions
        it just answered are sending their next frames) and no announced work is still on its
        way; or, at the latest, ``MAX_HOLD_S`` after that.
        """
        if not self._queue:
            return None
        now = time.monotonic()
        oldest = self._head()
        same_key = [r for r in self._queue if r.key == oldest.key and r.priority == oldest.priority]
        same_key = same_key[: self.config.max_batch_size]
        is_full = len(same_key) == self.config.max_batch_size
        delay = self.config.max_queue_delay_s
        has_waited = now - max(oldest.enqueued_at, self._free_since) >= delay
        is_expecting = bool(self._expected - {r.owner for r in self._queue})
        held_too_long = now - oldest.enqueued_at >= delay + MAX_HOLD_S
        if not (is_full or self._stopping or held_too_long or (has_waited and not is_expecting)):
            return None
        chosen = {id(r) for r in same_key}
        self._queue = deque(r for r in self._queue if id(r) not in chosen)
        return ScheduledBatch(next(self._ids), oldest.key, same_key)

    def _head(self) -> Request[P, R]:
        """The request that leads the next batch: the oldest of the most urgent priority."""
        urgent = min(r.priority for r in self._queue)
        return next(r for r in self._queue if r.priority == urgent)

    async def _execute(self, batch: ScheduledBatch[P, R]) -> None:
        self._busy = True
        try:
            await self._run_batch(batch)
        finally:
            self._busy = False

    async def _run_batch(self, batch: ScheduledBatch[P, R]) -> None:
        """Run the batch; if it fails, run its requests one by one (``_run_alone``)."""
        payloads = [r.payload for r in batch.requests]
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._thread, self.executor.execute, payloads)
            if len(results) != len(payloads):  # why here: a mismatch must fail the batch, not the loop
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(payloads)} requests")
        except Exception as exc:  # an engine failure fails this batch, never the loop
            log.exception("%s: batch %d of %d failed", self.name, batch.batch_id, len(payloads))
            self._report(batch, time.perf_counter() - started, ok=False)
            if len(batch.requests) == 1:
                _resolve(batch.requests[0].future, exc=exc)
            else:
                await self._run_alone(batch)
            self._free_since = time.monotonic()
            return
        self._report(batch, time.perf_counter() - started, ok=True)
        self._free_since = time.monotonic()
        for request, result in zip(batch.requests, results, strict=True):
            _resolve(request.future, result=result)

    async def _run_alone(self, failed: ScheduledBatch[P, R]) -> None:
        """Each request of a failed batch as a batch of its own, so one bad row (or a batch too
        big for the device) fails only itself and not the sessions it happened to share with."""
        errors: dict[str, BaseException] = {}  # owners with a row that failed alone
        for request in failed.requests:
            if request.future.done():  # why: its submitter gave up (closed) while the batch ran
                continue
            if request.owner in errors:  # why: its submitter already has its error (rows submitted together)
                _resolve(request.future, exc=errors[request.owner])
                continue
            await self._run_batch(ScheduledBatch(next(self._ids), failed.key, [request]))
            error = _failure(request.future)
            if error is not None:
                errors[request.owner] = error

    def _report(self, batch: ScheduledBatch[P, R], seconds: float, *, ok: bool) -> None:
        if self.on_batch is not None:
            owners = [r.owner for r in batch.requests]
            self.on_batch(BatchStats(batch.batch_id, len(batch.requests), owners, seconds, ok))

    def _apply_controls(self) -> None:
        while self._controls:
            control = self._controls.popleft()
            self._expected.discard(control.owner)
            dropped = [r for r in self._queue if r.owner == control.owner]
            self._queue = deque(r for r in self._queue if r.owner != control.owner)
            for request in dropped:
                _resolve(request.future, exc=Cancelled(f"session {control.owner} was closed"))
            control.done.set()


def _failure(future: asyncio.Future[R]) -> BaseException | None:
    """The error a settled future holds (None when it holds a result or was cancelled)."""
    if not future.done() or future.cancelled():
        return None
    return future.exception()


def _resolve(future: asyncio.Future[R], *, result: R | None = None, exc: BaseException | None = None) -> None:
    """Settle a future unless its awaiter already gave up on it."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
