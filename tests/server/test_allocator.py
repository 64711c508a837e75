"""glibc malloc tuning (server/allocator.py): with it, a large block freed and made again is
reused from the heap instead of being faulted in page by page."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from server.allocator import MallocTuning, _glibc, tune
from tests.conftest import REPO_ROOT

# A fresh process: malloc, write and free a 64 MiB block, then count the minor faults of doing
# it again (16384 pages of 4 KiB when it is a new mapping each time). Through libc itself, as
# torch's CPU allocator does: numpy asks the kernel for huge pages, which hides the faults.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, resource, sys, threading
    from server.allocator import MallocTuning, tune
    tuned = tune(MallocTuning(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def touch():
        block = libc.malloc(64 << 20)
        ctypes.memset(block, 1, 64 << 20)
        libc.free(block)
    def measure():
        global faults
        touch()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            touch()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    if sys.argv[4] == "thread":  # as the engines run: in a worker thread
        worker = threading.Thread(target=measure)
        worker.start()
        worker.join()
    else:
        measure()
    print(json.dumps({"tuned": tuned, "faults": faults}))
    """
)


def probe(mmap_mb: int, trim_mb: int, arena_max: int = 1, where: str = "main") -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(mmap_mb), str(trim_mb), str(arena_max), where],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    answer: dict[str, float] = json.loads(done.stdout)
    return answer


@pytest.mark.skipif(_glibc() is None, reason="mallopt tuning is glibc's; this C library is another")
def test_a_tuned_heap_reuses_large_blocks() -> None:
    plain, tuned = probe(0, 0), probe(1024, 1024)
    assert not plain["tuned"] and tuned["tuned"]
    assert plain["faults"] > 10_000  # a fresh mapping each time: one fault per page
    assert tuned["faults"] < 500


@pytest.mark.skipif(_glibc() is None, reason="mallopt tuning is glibc's; this C library is another")
def test_one_arena_lets_worker_threads_reuse_large_blocks_too() -> None:
    """A thread's own arena is built of 64 MiB heaps: a 64 MiB block there is mapped afresh
    each time, whatever the threshold, unless every thread shares the main arena."""
    own_arenas, one_arena = probe(1024, 1024, 0, "thread"), probe(1024, 1024, 1, "thread")
    assert own_arenas["faults"] > 10_000
    assert one_arena["tuned"] and one_arena["faults"] < 500


def test_zero_leaves_glibc_alone() -> None:
    assert tune(MallocTuning(0, 512)) is False
