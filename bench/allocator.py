"""Page faults and glibc's mmap threshold (issue 16): the same work in fresh processes under
each malloc setting, interleaved round by round (A B C, then B C A, ...), so background load
falls on all alike. Each process warms up once, then measures ``--repeats`` units of work:
wall time, minor page faults and system time (getrusage), and its resident memory after.

    python bench/allocator.py --write        # both workloads, into BENCHMARKS.md

Workloads, on eager torch with the hashed-weight recipe (the released weights of 4.6 and XMem
cannot be fetched here; the arithmetic and the allocations are the same):
- ``xmem``: a 2-object XMem frame at 480×864 (``InferenceCore.step``), memory frames included;
- ``rife4``: RIFE 4.6 at 720p, one batch of 4 pairs, against ``rife1``: the same 4 pairs one
  call at a time (where batching lost on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # why: run as a script, only bench/ is on sys.path

from report import device_line, load_average, refuse_when_loaded, versions, write_section  # noqa: E402

SECTION = "allocator"
# (label, mmap threshold MiB, trim threshold MiB); 0: glibc's own dynamic threshold
SETTINGS = [
    ("glibc default", 0, 0),
    ("mmap 256 MiB, trim 512 MiB", 256, 512),
    ("mmap 1 GiB, trim 1 GiB", 1024, 1024),
]
WORKLOADS = ("xmem", "rife4", "rife1")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    workload: str
    setting: str
    ms: float  # wall time of one unit of work
    faults: float  # minor page faults per unit
    sys_ms: float  # system time per unit
    rss_mb: float  # resident memory after the last unit


# --- the worker: one process, one setting, one workload ----------------------------------


def xmem_unit() -> Callable[[], None]:
    import numpy as np

    from models.xmem.export import eager_engines
    from models.xmem.inference_core import InferenceCore
    from tests.models.xmem_support import hashed_xmem

    core = InferenceCore(eager_engines(hashed_xmem()))
    gen = np.random.default_rng(0)
    frames = [gen.integers(0, 256, (480, 864, 3), dtype=np.uint8) for _ in range(2)]
    mask = np.zeros((480, 864), np.uint8)
    mask[100:250, 100:400], mask[250:420, 450:800] = 1, 2
    core.step(frames[0], mask)
    count = iter(range(1, 10**9))

    def unit() -> None:
        core.step(frames[next(count) % 2])

    return unit


def rife_unit(batched: bool) -> Callable[[], None]:
    import torch

    from models.rife.inference import Interpolator
    from models.rife.spec import get_spec
    from models.runtime import TorchRunner
    from tests.models.rife_engines import hashed_ifnet

    spec = get_spec("4.6")
    interpolator = Interpolator(
        spec, TorchRunner(hashed_ifnet("4.6").eval(), "eager"), scene_change_threshold=None
    )
    gen = torch.Generator().manual_seed(0)
    img0, img1 = (torch.rand(4, 3, 736, 1280, generator=gen) for _ in range(2))  # 720p, padded
    steps = torch.full((4, 1, 1, 1), 0.5)

    def unit() -> None:
        with torch.inference_mode():
            if batched:
                interpolator.run_padded(img0, img1, steps, 1.0)
            else:
                for i in range(4):
                    interpolator.run_padded(img0[i : i + 1], img1[i : i + 1], steps[i : i + 1], 1.0)

    return unit


def worker(workload: str, mmap_mb: int, trim_mb: int, repeats: int) -> dict[str, float]:
    from server.allocator import MallocTuning, tune

    tune(MallocTuning(mmap_mb, trim_mb))  # why first: before any large block is mapped
    unit = xmem_unit() if workload == "xmem" else rife_unit(batched=workload == "rife4")
    unit()  # warm-up: first calls pay for lazy initialisation
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        unit()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return {
        "ms": wall * 1000 / repeats,
        "faults": (after.ru_minflt - before.ru_minflt) / repeats,
        "sys_ms": (after.ru_stime - before.ru_stime) * 1000 / repeats,
        "rss_mb": rss_pages * PAGE / 2**20,
    }


# --- the driver ----------------------------------------------------------------------------


def run_worker(workload: str, setting: tuple[str, int, int], repeats: int) -> Sample:
    label, mmap_mb, trim_mb = setting
    command = [sys.executable, __file__, "--worker", workload, str(mmap_mb), str(trim_mb), str(repeats)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    numbers = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(workload, label, **numbers)


def measure(workloads: Sequence[str], rounds: int, repeats: int) -> list[Sample]:
    samples = []
    for r in range(rounds):
        for workload in workloads:
            order = SETTINGS[r % len(SETTINGS) :] + SETTINGS[: r % len(SETTINGS)]  # rotate each round
            for setting in order:
                sample = run_worker(workload, setting, repeats)
                print(f"  round {r + 1} {workload:6} {sample.setting:28} {sample.ms:8.0f} ms "
                      f"{sample.faults:9.0f} faults {sample.sys_ms:6.0f} ms sys {sample.rss_mb:6.0f} MB",
                      flush=True)  # fmt: skip
                samples.append(sample)
    return samples


def table(samples: list[Sample], workloads: Sequence[str]) -> str:
    rows = [
        "| work | malloc | ms per unit (median) | vs glibc default | minor faults per unit "
        "| system ms per unit | RSS after, MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for workload in workloads:
        base = statistics.median(
            s.ms for s in samples if s.workload == workload and s.setting == SETTINGS[0][0]
        )
        for label, _, _ in SETTINGS:
            mine = [s for s in samples if s.workload == workload and s.setting == label]
            ms = statistics.median(s.ms for s in mine)
            faults, sys_ms = (statistics.median(getattr(s, k) for s in mine) for k in ("faults", "sys_ms"))
            rss = max(s.rss_mb for s in mine)
            cells = [
                workload,
                label,
                f"{ms:.0f}",
                f"{base / ms:.2f}×",
                f"{faults:.0f}",
                f"{sys_ms:.0f}",
                f"{rss:.0f}",
            ]
            rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def batching_line(samples: list[Sample]) -> str:
    """rife4 against rife1 under each setting: does a batch of 4 beat 4 single calls?"""
    parts = []
    for label, _, _ in SETTINGS:
        one = statistics.median(s.ms for s in samples if s.workload == "rife1" and s.setting == label)
        four = statistics.median(s.ms for s in samples if s.workload == "rife4" and s.setting == label)
        parts.append(f"{label}: {one / four:.2f}×")
    return (
        "A batch of 4 against the same 4 pairs one call at a time (above 1: batching wins): "
        + "; ".join(parts)
        + "."
    )


def section(
    samples: list[Sample], workloads: Sequence[str], argv: Sequence[str], load: tuple[str, str], wall_s: float
) -> str:
    lines = [
        "## malloc and page faults (`bench/allocator.py`)",
        "",
        device_line(),
        f"- Versions: {versions()}.",
        f"- Command: `python bench/allocator.py {' '.join(argv)}` ({wall_s:.0f} s); load average "
        f"{load[0]} at the start, {load[1]} at the end.",
        "- Each cell is the median over rounds of fresh processes, settings rotated each round; a unit is "
        "one XMem frame (2 objects, 480×864), or 4 RIFE 4.6 pairs at 720p in one batch (rife4) or one "
        "at a time (rife1); eager torch, hashed weights.",
        "",
        table(samples, workloads),
        "",
    ]
    if "rife4" in workloads and "rife1" in workloads:
        lines += [batching_line(samples), ""]
    lines.append(
        "The server applies `VIDSERVE_MALLOC_MMAP_THRESHOLD_MB` and `VIDSERVE_MALLOC_TRIM_THRESHOLD_MB` "
        "at start (`server/allocator.py`; 0 keeps glibc's own)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        workload, mmap_mb, trim_mb, repeats = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        print(json.dumps(worker(workload, mmap_mb, trim_mb, repeats)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="units measured per process")
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if args.write:
        refuse_when_loaded()
    load_start, start = load_average(), time.perf_counter()
    samples = measure(workloads, args.rounds, args.repeats)
    body = section(samples, workloads, argv, (load_start, load_average()), time.perf_counter() - start)
    print(body)
    if args.write:
        write_section(REPO_ROOT / "BENCHMARKS.md", SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
