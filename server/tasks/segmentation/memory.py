"""Segmentation's memory accounting: each session (and job) reserves its worst case in the
server's budget, from the checkpoint's real widths; the memory live sessions hold, by tier,
and the consolidations and prunings are exported as metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from server.metrics import Metrics
from server.state import ServerState
from server.tasks.segmentation.service import SegmentationService
from server.tasks.segmentation.session import TASK, SegmentationSession

BUDGET_HINT = "ask for fewer objects, a smaller processing size or less memory"
TIERS = ("working", "long_term", "sensory")


@dataclass(frozen=True)
class SegmentationMetrics:
    """The task's series in one app's registry."""

    consolidations: Counter  # working memory consolidated into long-term memory
    long_term_removals: Counter  # long-term prunings of least-used elements


def register(metrics: Metrics, state: ServerState) -> None:
    r = metrics.registry
    memory = Gauge(
        "vidserve_segmentation_memory_bytes",
        "XMem memory held by live sessions, by tier",
        ["tier"],
        registry=r,
    )
    for tier in TIERS:
        memory.labels(tier).set_function(_tier_bytes(state, tier))
    reserved = Gauge(
        "vidserve_segmentation_memory_reserved_bytes", "Memory budget reserved by live sessions", registry=r
    )
    reserved.set_function(lambda: state.budget.reserved_bytes)
    metrics.tasks[TASK] = SegmentationMetrics(
        Counter(
            "vidserve_segmentation_consolidations",
            "Working memory consolidated into long-term memory",
            registry=r,
        ),
        Counter(
            "vidserve_segmentation_long_term_removals",
            "Long-term memory prunings of least-used elements",
            registry=r,
        ),
    )


def metrics_of(state: ServerState) -> SegmentationMetrics:
    found = state.metrics.tasks[TASK]
    assert isinstance(found, SegmentationMetrics)
    return found


def _tier_bytes(state: ServerState, tier: str) -> Callable[[], float]:
    def total() -> float:
        sessions = [s for s in state.sessions.all() if isinstance(s, SegmentationSession)]
        return sum(s.memory_bytes()[tier] for s in sessions)

    return total


def reserve_for_size(
    state: ServerState, service: SegmentationService, session: SegmentationSession, height: int, width: int
) -> None:
    """Once the frame size is known, hold exactly the session's worst case."""
    if session.size is not None:
        return
    bound = service.memory_bound(
        session.config, (height, width), session.processing_size, session.max_objects
    )
    state.budget.reserve(session.id, bound, BUDGET_HINT)
    session.reserved_bytes = bound
