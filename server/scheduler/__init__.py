"""Dynamic batching across sessions: the scheduler decides, the engine runs, results flow back."""

from server.scheduler.batcher import (
    BatchExecutor,
    BatchStats,
    Cancelled,
    Overloaded,
    Priority,
    Request,
    ScheduledBatch,
    Scheduler,
    SchedulerConfig,
    ShuttingDown,
    TooLarge,
)

__all__ = [
    "BatchExecutor",
    "BatchStats",
    "Cancelled",
    "Overloaded",
    "Priority",
    "Request",
    "ScheduledBatch",
    "Scheduler",
    "SchedulerConfig",
    "ShuttingDown",
    "TooLarge",
]
