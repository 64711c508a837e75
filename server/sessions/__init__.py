"""Per-session state (typed dataclasses) and the store that holds, expires and closes them."""

from server.sessions.budget import BudgetExceeded, MemoryBudget
from server.sessions.interpolation import InterpolationSession
from server.sessions.segmentation import PendingMask, SegmentationSession
from server.sessions.store import (
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionState,
    SessionStore,
)

__all__ = [
    "BudgetExceeded",
    "InterpolationSession",
    "MemoryBudget",
    "PendingMask",
    "SegmentationSession",
    "SessionExpired",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionState",
    "SessionStore",
]
