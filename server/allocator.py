"""glibc malloc tuning for large tensors, applied once at start.

glibc serves every allocation above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with
a fresh mmap and unmaps it on free, so a torch tensor of tens of MB costs a page fault per
4 KiB page every time it is made: issue 16 measured 250-290k minor faults and about 0.5 s of
system time per 2-object segmentation frame at 480×864, and 1.26M faults for an interpolation
batch of 4 at 720p. Raising the threshold keeps such blocks in the heap, where freed ones are reused; a trim
threshold above it stops glibc handing the heap's top back only to fault it in again.
Resident memory then stays near the peak working set instead of dropping after each frame,
bounded by the peak plus the trim threshold (measured in bench/allocator.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

from server.settings import Settings

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MIB = 1 << 20


@dataclass(frozen=True)
class MallocTuning:
    """What ``tune`` sets; 0 leaves glibc's own behaviour."""

    mmap_threshold_mb: int  # allocations above this get their own mmap; below, the heap
    trim_threshold_mb: int  # free memory at the heap's top kept before it is handed back
    # malloc arenas threads share; 0 keeps glibc's (8 per core). why 1 by default: a thread's
    # own arena is made of 64 MiB heaps, so a larger block there is mapped afresh whatever the
    # threshold; engines run in worker threads (issue 16: a 720p interpolation batch of 4 took
    # 113k faults a frame in them, 5.5k with one arena)
    arena_max: int = 1


def tuning_of(settings: Settings) -> MallocTuning:
    """What the ``VIDSERVE_MALLOC_*`` settings ask for."""
    return MallocTuning(
        settings.malloc_mmap_threshold_mb, settings.malloc_trim_threshold_mb, settings.malloc_arena_max
    )


def tune(tuning: MallocTuning) -> bool:
    """Apply ``tuning`` with mallopt; False (and a log line) where glibc is not the allocator
    (musl, macOS) or a call is refused. Call before large allocations: blocks already mapped
    keep their mapping."""
    if tuning.mmap_threshold_mb <= 0:
        return False
    libc = _glibc()
    if libc is None:
        log.info("malloc tuning skipped: the C library is not glibc")
        return False
    mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, tuning.mmap_threshold_mb * MIB) == 1
    trim = max(tuning.trim_threshold_mb, tuning.mmap_threshold_mb)
    trim_ok = libc.mallopt(M_TRIM_THRESHOLD, trim * MIB) == 1
    arena_ok = tuning.arena_max <= 0 or libc.mallopt(M_ARENA_MAX, tuning.arena_max) == 1
    if not (mmap_ok and trim_ok and arena_ok):
        log.warning(
            "malloc tuning refused by glibc (mmap %s, trim %s, arenas %s)", mmap_ok, trim_ok, arena_ok
        )
        return False
    log.info(
        "malloc: blocks up to %d MiB from the heap, %d MiB kept at its top, %s arena(s)",
        tuning.mmap_threshold_mb, trim, tuning.arena_max or "glibc's",
    )  # fmt: skip
    return True


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # why: only glibc has it; musl's mallopt does nothing
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
