"""Engine work written as steps (``models/steps.py``), driven through a scheduler: each batch
the steps yield is submitted as one unit, keyed for batching with other owners' work, and
the steps themselves (cropping, selecting, deciding) run in a worker thread, off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from models.steps import Steps
from server.scheduler.batcher import Overloaded, Priority, Scheduler, ShuttingDown

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")


async def drive(
    scheduler: Scheduler[P, R],
    owner: str,
    steps: Steps[P, R, T],
    key: Callable[[P], Hashable],
    priority: Priority = Priority.LIVE,
) -> T:
    """Run ``steps`` to their answer; ``key`` is the batch key of a yielded batch's payloads
    (one key per batch: the steps yield only payloads that share it)."""
    done, value = await asyncio.to_thread(_advance, steps, None)
    while not done:
        payloads: list[P] = value
        results = await asyncio.gather(*scheduler.submit(owner, key(payloads[0]), payloads, priority))
        done, value = await asyncio.to_thread(_advance, steps, list(results))
    answer: T = value
    return answer


def _advance(steps: Steps[Any, Any, Any], results: list[Any] | None) -> tuple[bool, Any]:
    """One step: (False, the next payloads) or (True, the answer); StopIteration cannot cross
    a thread's future, so it is caught here."""
    try:
        return False, next(steps) if results is None else steps.send(results)
    except StopIteration as stop:
        return True, stop.value


# why: work that finds its engine queue full waits and retries instead of failing: jobs (live
# sessions have their own bound, so this happens only when many jobs run at once), and the
# later parts of a pair already under way
OVERLOADED_RETRY_S = 0.02


async def retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` again while the engine queue is full (not once it is stopping)."""
    while True:
        try:
            return await attempt()
        except ShuttingDown:
            raise
        except Overloaded:
            await asyncio.sleep(OVERLOADED_RETRY_S)
