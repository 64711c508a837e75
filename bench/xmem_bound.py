"""XMem's memory bound over a long stream of tiny frames with small caps, and what it costs:
the 3000-frame run of the unit test ``test_memory_stays_bounded_with_objects_coming_and_going``
(which runs 120 frames with smaller caps still).

16×16 frames are one memory element each. Objects 1 and 2 from frame 0, object 3 added on
frame 700 (a second object group), object 1 removed before frame 1500. With memory frames
every 2, T_min 2, T_max 4, 6 prototypes and a long-term cap of 40, working memory consolidates
every 4 frames and long-term memory drops elements at nearly every consolidation, with groups
of different lengths after frame 700 (the case the reference refuses, XMem issue 43).

It checks what the unit test checks (both memories at their caps and never over, the bytes
under ``memory_bound_bytes``, removal in every phase and across groups, objects 2 and 3 at the
end), prints the peaks and the time, writes its section of BENCHMARKS.md, and exits 1 when a
check fails. Weights: the conformance README's hashed weights; eager engines.

Run from the repository root: ``python bench/xmem_bound.py`` (about 2 minutes on 2 idle cores),
``--help`` for the flags.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; the packages live at the root
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from report import device_line, versions, write_section  # noqa: E402

from models.xmem.config import XMemConfig  # noqa: E402
from models.xmem.export import eager_engines  # noqa: E402
from models.xmem.inference_core import InferenceCore  # noqa: E402
from models.xmem.memory_manager import MemoryManager, memory_bound_bytes  # noqa: E402
from tests.models.xmem_support import (  # noqa: E402
    TINY_SIZE,
    ObjectsPlan,
    StreamLog,
    hashed_xmem,
    run_objects_stream,
)

SECTION = "xmem_bound"
# why these: the unit test's settings before it was cut to 120 frames (XMem issue 43's case)
CONFIG = XMemConfig(
    mem_every=2, min_mid_term_frames=2, max_mid_term_frames=4, num_prototypes=6, max_long_term_elements=40
)
MOST_OBJECTS = 3  # objects 1, 2 and 3 are all tracked between the add and the removal


def checks(log: StreamLog, memory: MemoryManager, config: XMemConfig) -> list[tuple[str, bool]]:
    """What the unit test asserts, each named."""
    work_cap, long_cap = config.max_mid_term_frames, config.max_long_term_elements  # one element a frame
    bound = memory_bound_bytes(config, (TINY_SIZE, TINY_SIZE), MOST_OBJECTS)
    return [
        ("every probability finite", log.all_finite),
        (
            "objects 2 and 3 at the end, a group each",
            log.object_ids == [2, 3] and [len(g) for g in memory.groups] == [1, 1],
        ),
        (
            f"working memory fills to T_min and stays under T_max = {work_cap}",
            config.min_mid_term_frames <= log.peak_work < work_cap,
        ),
        (
            f"long-term memory reaches its cap {long_cap} and never passes it",
            long_cap - config.num_prototypes < log.peak_long <= long_cap,
        ),
        (f"bytes under memory_bound_bytes = {bound}", log.peak_bytes <= bound),
        ("removal with one group", log.removals_before_add > 0),
        ("removal with two groups", log.removals_before_remove > log.removals_before_add),
        ("removal after object 1 went", memory.long_term_removals > log.removals_before_remove),
        ("long-term memory holds both groups' values", memory.long.num_groups == 2),
        ("removal while the groups' lengths differed", log.uneven_removals > 0),
    ]


def section(log: StreamLog, memory: MemoryManager, plan: ObjectsPlan, argv: Sequence[str]) -> str:
    c = CONFIG
    intro = (
        f"One stream of {plan.frames} frames at {TINY_SIZE}×{TINY_SIZE} (one memory element per frame) "
        f"on eager torch: objects 1 and 2 from frame 0, object 3 added on frame {plan.add_at} (a second "
        f"object group), object 1 removed before frame {plan.remove_at}. Settings: memory frame every "
        f"{c.mem_every}, T_min {c.min_mid_term_frames}, T_max {c.max_mid_term_frames}, {c.num_prototypes} "
        f"prototypes, long-term cap {c.max_long_term_elements}. Peaks are read after every step; bytes "
        "are `MemoryManager.nbytes()`. Weights: the conformance README's hashed weights."
    )
    command = shlex.join(["python", "bench/xmem_bound.py", *argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    environment = [
        device_line(),
        f"- Threads: torch {torch.get_num_threads()}. Versions: {versions()}.",
        f"- Command: `{command}`, {date}; load average (1, 5, 15 min) at the end {load}.",
    ]
    table = [
        "| frames | s | ms/frame | peak working | peak long-term | peak bytes | consolidations "
        "| removals (before add, before removal, all) | removals across uneven groups |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        f"| {plan.frames} | {log.seconds:.0f} | {1000 * log.seconds / plan.frames:.0f} | {log.peak_work} "
        f"| {log.peak_long} | {log.peak_bytes} | {memory.consolidations} | {log.removals_before_add}, "
        f"{log.removals_before_remove}, {memory.long_term_removals} | {log.uneven_removals} |",
    ]
    verdict = [f"- {'ok' if ok else '**failed**'}: {name}" for name, ok in checks(log, memory, CONFIG)]
    parts = ["## XMem memory bound over a long stream of tiny frames (CPU)", intro]
    return "\n\n".join([*parts, "\n".join(environment), "\n".join(table), "Checks:", "\n".join(verdict)])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--add-at", type=int, default=700, help="frame on which object 3 arrives")
    parser.add_argument("--remove-at", type=int, default=1500, help="frame before which object 1 goes")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not 0 < args.add_at < args.remove_at < args.frames:
        parser.error("need 0 < --add-at < --remove-at < --frames")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = ObjectsPlan(args.frames, args.add_at, args.remove_at)
    core = InferenceCore(eager_engines(hashed_xmem()), CONFIG)
    print(f"{plan.frames} frames of {TINY_SIZE}×{TINY_SIZE}...", flush=True)
    log = run_objects_stream(core, plan)
    body = section(log, core.state.memory, plan, argv)
    print(body)
    write_section(args.output, SECTION, body)
    print(f"\nwrote section {SECTION} of {args.output}")
    return 0 if all(ok for _, ok in checks(log, core.state.memory, CONFIG)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
