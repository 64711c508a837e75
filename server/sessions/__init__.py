"""What every session has (``SessionCore``), and the store that holds, expires and closes
sessions of every task; each task's session type lives in its package."""

from server.sessions.budget import BudgetExceeded, MemoryBudget
from server.sessions.store import (
    Session,
    SessionCore,
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionState,
    SessionStore,
)

__all__ = [
    "BudgetExceeded",
    "MemoryBudget",
    "Session",
    "SessionCore",
    "SessionExpired",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionState",
    "SessionStore",
]
