"""The global memory budget: a session (or job) whose memory grows reserves its worst case
up front, so a running session never runs out of memory and is never cut short."""

from __future__ import annotations


class BudgetExceeded(RuntimeError):
    """Admitting this session would exceed ``VIDSERVE_MEMORY_BUDGET_BYTES`` (429 / 1013)."""


class MemoryBudget:
    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self._reserved: dict[str, int] = {}

    @property
    def reserved_bytes(self) -> int:
        return sum(self._reserved.values())

    def reserve(self, owner: str, nbytes: int, hint: str = "") -> None:
        """Hold ``nbytes`` for ``owner`` (replacing what it held), or raise ``BudgetExceeded``
        whose message ends with ``hint``: how the caller could ask for less."""
        others = self.reserved_bytes - self._reserved.get(owner, 0)
        if others + nbytes > self.total_bytes:
            raise BudgetExceeded(
                f"memory budget exceeded: this session needs up to {_mib(nbytes)}, "
                f"{_mib(self.total_bytes - others)} of {_mib(self.total_bytes)} is free; "
                f"try again later{', or ' + hint if hint else ''}"
            )
        self._reserved[owner] = nbytes

    def release(self, owner: str) -> None:
        self._reserved.pop(owner, None)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
