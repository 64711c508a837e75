"""Per-session state (typed dataclasses) and the store that holds, expires and closes them."""

from server.sessions.interpolation import InterpolationSession
from server.sessions.store import (
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionState,
    SessionStore,
)

__all__ = [
    "InterpolationSession",
    "SessionExpired",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionState",
    "SessionStore",
]
