"""Time XMem's streaming core (``InferenceCore.step``) and watch its memory over a long stream;
each measurement writes its own marked section of BENCHMARKS.md.

``speed``: per-frame wall time of ``step`` at 480p (480×864) for 1, 2 and 4 objects on each local
engine (eager torch, TorchScript, ONNX Runtime CPU provider), fp32. Frame 0 brings a mask with
one blob per object (the prompt frame), ``--warmup`` frames follow untimed, then ``--frames``
frames are timed. The engines step the same frames interleaved (frame t on every engine, then
t+1), so background load hits them alike; each engine's median is compared with eager's.

``memory``: one long stream (2000 frames at 192×320 by default) with the paper's settings on the
fastest engine (measured first on a few frames): objects 1 and 2 from frame 0, object 3 added at
frame 500, object 1 removed at frame 1000. Every 100 frames it records the working and long-term
memory sizes and bytes, consolidations, long-term removals, the process RSS and the time per
frame. When 2000 frames would take longer than ``--memory-budget-min`` minutes, the resolution is
halved until they fit, and the section says so.

Frames: scikit-image's astronaut photograph resized with Pillow, panned by a few pixels per
frame (deterministic). Weights: the conformance README's hashed weights
(``tests/models/xmem_support.hashed_xmem``); the released XMem.pth cannot be downloaded here.
Timings do not depend on the weight values (the same layers run on the same shapes).

Run from the repository root: ``python bench/xmem_core.py [speed|memory|all]`` (default all:
each part in its own process, so the memory part's RSS is not the speed part's), ``--help``
for the flags.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; the models package lives at the root
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from report import device_line, split, timed, versions, write_section  # noqa: E402

from models.repository import Format  # noqa: E402
from models.runtime import ENGINE_KINDS, EngineKind, OnnxRunner  # noqa: E402
from models.xmem.config import XMemConfig  # noqa: E402
from models.xmem.export import XMemEngines, eager_engines, export_xmem, load_engines  # noqa: E402
from models.xmem.inference_core import InferenceCore  # noqa: E402
from models.xmem.network import STRIDE  # noqa: E402
from tests.models.xmem_support import hashed_xmem  # noqa: E402

T = TypeVar("T")

SPEED_SECTION, MEMORY_SECTION = "xmem_speed", "xmem_memory"
KINDS: dict[str, EngineKind] = {kind: kind for kind in ENGINE_KINDS}
PAN_MARGIN = 16  # frames pan within ±this many pixels of the photograph's centre
PAN_STEP_YX = (1, 2)  # pixels moved per frame (y, x), turning back at the margin
MIB = 1024 * 1024


# --- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSource:
    """Deterministic frames: a view of the astronaut photograph panned a little each frame."""

    height: int
    width: int
    photo: np.ndarray  # uint8 S×S×3, S = max(height, width) + 2·PAN_MARGIN

    @classmethod
    def make(cls, height: int, width: int) -> FrameSource:
        from skimage import data  # why here: test-only dependency, needed by this script alone

        side = max(height, width) + 2 * PAN_MARGIN
        photo = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BICUBIC)
        return cls(height, width, np.asarray(photo))

    def frame(self, t: int) -> np.ndarray:
        side = self.photo.shape[0]
        top = (side - self.height) // 2 + triangle(t * PAN_STEP_YX[0], PAN_MARGIN)
        left = (side - self.width) // 2 + triangle(t * PAN_STEP_YX[1], PAN_MARGIN)
        return np.ascontiguousarray(self.photo[top : top + self.height, left : left + self.width])


def triangle(u: int, margin: int) -> int:
    """A triangle wave in [-margin, margin] with slope 1, starting at 0."""
    phase = (u + margin) % (4 * margin)
    return margin - abs(phase - 2 * margin)


def blob_mask(height: int, width: int, slots: int, objects: Sequence[int]) -> np.ndarray:
    """uint8 H×W: object k an ellipse in slot k-1 of ``slots`` spread left to right."""
    mask = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    ry, rx = height / 6, width / (3 * slots + 1)
    for obj in objects:
        cy = height * (0.4 if obj % 2 else 0.6)
        cx = width * obj / (slots + 1)
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = obj
    return mask


# --- engines -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedEngines:
    """One kind's engines and what it cost to get them."""

    kind: EngineKind
    engines: XMemEngines
    export_s: float | None  # None for eager: nothing to export
    load_s: float


class EnginePool:
    """Engines exported on first use into one temporary repository, then reused."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.loaded: dict[EngineKind, LoadedEngines] = {}

    def get(self, kind: EngineKind) -> LoadedEngines:
        if kind not in self.loaded:
            self.loaded[kind] = load_kind(kind, self.repository)
            print(f"  loaded {kind}: {setup_cell(self.loaded[kind])}", flush=True)
        return self.loaded[kind]

    def release(self, kinds: Sequence[EngineKind]) -> None:
        """Drop engines no longer needed, so they do not sit in the RSS being watched."""
        for kind in kinds:
            self.loaded.pop(kind, None)
        gc.collect()


def load_kind(kind: EngineKind, repository: Path) -> LoadedEngines:
    net = hashed_xmem()
    if kind == "eager":
        engines, load_s = timed(lambda: eager_engines(net))
        return LoadedEngines(kind, engines, None, load_s)
    fmt: Format = "onnx" if kind == "onnx" else "torchscript"
    (folder, _), export_s = timed(lambda: export_xmem(net, repository, fmt))
    engines, load_s = timed(lambda: load_engines(folder, kind))
    return LoadedEngines(kind, engines, export_s, load_s)


def setup_cell(loaded: LoadedEngines) -> str:
    export = "no export" if loaded.export_s is None else f"export {loaded.export_s:.1f} s"
    return f"{export}, load {loaded.load_s:.2f} s"


# --- speed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One ``step`` of one engine's core."""

    objects: int
    engine: EngineKind
    frame: int
    ms: float
    is_memory: bool


@dataclass(frozen=True)
class SpeedRow:
    """One objects × engine case, from its samples."""

    objects: int
    engine: EngineKind
    prompt_ms: float
    timed: list[Sample]

    def median(self, memory: bool | None = None) -> float | None:
        times = [s.ms for s in self.timed if memory is None or s.is_memory == memory]
        return statistics.median(times) if times else None

    def count(self, memory: bool) -> int:
        return sum(s.is_memory == memory for s in self.timed)

    @property
    def p90(self) -> float:
        return float(np.percentile([s.ms for s in self.timed], 90))


def step_ms(core: InferenceCore, frame: np.ndarray, mask: np.ndarray | None) -> tuple[float, bool]:
    result, seconds = timed(lambda: core.step(frame, mask))
    return seconds * 1000, result.is_memory_frame


def speed_case(
    objects: int, kinds: list[EngineKind], pool: EnginePool, source: FrameSource, args: argparse.Namespace
) -> list[Sample]:
    """Every engine steps frame t (frame 0 with the mask) before any steps frame t+1."""
    mask = blob_mask(source.height, source.width, objects, range(1, objects + 1))
    cores = {kind: InferenceCore(pool.get(kind).engines, XMemConfig()) for kind in kinds}
    samples = []
    for t in range(1 + args.warmup + args.frames):
        frame = source.frame(t)
        for kind, core in cores.items():
            ms, is_memory = step_ms(core, frame, mask if t == 0 else None)
            samples.append(Sample(objects, kind, t, ms, is_memory))
            role = "prompt" if t == 0 else "warm-up" if t <= args.warmup else "timed"
            flag = " memory" if is_memory else ""
            print(f"  {objects} obj frame {t:2d} {kind:<11} {ms:8.0f} ms ({role}{flag})", flush=True)
    return samples


def speed_rows(samples: list[Sample], warmup: int) -> list[SpeedRow]:
    cases = dict.fromkeys((s.objects, s.engine) for s in samples)
    rows = []
    for objects, engine in cases:
        mine = [s for s in samples if (s.objects, s.engine) == (objects, engine)]
        prompt = next(s.ms for s in mine if s.frame == 0)
        rows.append(SpeedRow(objects, engine, prompt, [s for s in mine if s.frame > warmup]))
    return rows


def speedup(row: SpeedRow, rows: list[SpeedRow]) -> str:
    """Eager's median over this row's, same objects, same frames: above 1 is faster than eager."""
    eager = [r for r in rows if r.engine == "eager" and r.objects == row.objects]
    mine, base = row.median(), eager[0].median() if eager else None
    return f"{base / mine:.2f}×" if base is not None and mine else "n/a"


def fmt_ms(value: float | None, count: int) -> str:
    return "—" if value is None else f"{value:.0f} ({count})"


def speed_table(rows: list[SpeedRow]) -> str:
    lines = [
        "| objects | engine | median ms/frame | p90 ms/frame | other frames: median (n) "
        "| memory frames: median (n) | prompt frame ms | speed-up vs eager |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.objects} | {r.engine} | {r.median():.0f} | {r.p90:.0f} "
            f"| {fmt_ms(r.median(False), r.count(False))} | {fmt_ms(r.median(True), r.count(True))} "
            f"| {r.prompt_ms:.0f} | {speedup(r, rows)} |"
        )
    return "\n".join(lines)


def run_speed(args: argparse.Namespace, pool: EnginePool, argv: Sequence[str]) -> str:
    start, load_start = time.perf_counter(), os.getloadavg()
    height, width = args.size
    source = FrameSource.make(height, width)
    kinds = engine_kinds(args.engines)
    samples: list[Sample] = []
    for objects in args.objects:
        samples += speed_case(objects, kinds, pool, source, args)
    rows = speed_rows(samples, args.warmup)
    run = RunInfo(argv, time.perf_counter() - start, load_start, os.getloadavg())
    return speed_section(rows, [pool.get(k) for k in kinds], args, run)


def speed_section(
    rows: list[SpeedRow], loaded: list[LoadedEngines], args: argparse.Namespace, run: RunInfo
) -> str:
    height, width = args.size
    intro = (
        f"Wall time of `InferenceCore.step` (normalise, pad, engines, memory readout, aggregation) "
        f"at {height}×{width}, fp32, default settings (`XMemConfig()`: memory frame every 5, top-k 30, "
        f"long-term on). Frame 0 brings a mask with one elliptic blob per object (the prompt frame, "
        f"its own column), {warmup_text(args.warmup)}, frames {args.warmup + 1}–"
        f"{args.warmup + args.frames} are timed; frames that write memory (every 5th) are split out. "
        "The engines step the same frames interleaved (frame t on each engine, then t+1), so "
        "background load falls on all alike. p90 interpolates linearly between samples. "
        "\"speed-up vs eager\" is eager's median over the row's, same objects, same frames. " + WEIGHTS_NOTE
    )
    return "\n\n".join(
        [
            "## XMem streaming core, per-frame time (CPU)",
            intro,
            environment(loaded, run),
            speed_table(rows),
            "Export into a temporary model repository (not the cache), then load: "
            + "; ".join(f"{e.kind} {setup_cell(e)}" for e in loaded)
            + ".",
        ]
    )


def warmup_text(warmup: int) -> str:
    if warmup == 0:
        return "no warm-up frames"
    return "frame 1 is an untimed warm-up" if warmup == 1 else f"frames 1–{warmup} are untimed warm-up"


WEIGHTS_NOTE = (
    "Weights: the conformance README's deterministic hashed weights "
    "(`tests/models/xmem_support.hashed_xmem`), because the released `XMem.pth` cannot be "
    "downloaded from this machine; the same layers run on the same shapes whatever the weight "
    "values, so the timings stand for the released weights."
)


# --- memory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPlan:
    """The long stream's events."""

    frames: int
    add_at: int  # object 3 arrives on this frame (a new object group)
    remove_at: int  # object 1 is removed before this frame
    record_every: int


@dataclass(frozen=True)
class MemoryRow:
    """The state after ``frames_done`` frames."""

    frames_done: int
    objects: list[int]
    work: int
    long: int
    work_bytes: int
    long_bytes: int
    consolidations: int
    removals: int
    rss_bytes: int
    mean_ms: float  # mean per frame since the previous row
    max_ms: float


@dataclass
class StreamLog:
    """Rows, peaks over every frame, and the frame times since the last row."""

    rows: list[MemoryRow] = field(default_factory=list)
    peak_work: int = 0
    peak_long: int = 0
    first_removal: int | None = None  # the frame whose step first dropped long-term elements
    window_ms: list[float] = field(default_factory=list)


def rss_bytes() -> int:
    """The process's resident set (VmRSS of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def planned_step(core: InferenceCore, source: FrameSource, t: int, plan: StreamPlan) -> float:
    """Step frame t with the plan's events; returns the step's milliseconds."""
    height, width = source.height, source.width
    if t == plan.remove_at:
        core.remove_object(1)
    if t == 0:
        return step_ms(core, source.frame(t), blob_mask(height, width, 3, [1, 2]))[0]
    if t == plan.add_at:
        mask = blob_mask(height, width, 3, [3])
        return timed(lambda: core.step(source.frame(t), mask, objects=[3]))[1] * 1000
    return step_ms(core, source.frame(t), None)[0]


def record(core: InferenceCore, log: StreamLog, frames_done: int) -> MemoryRow:
    memory = core.state.memory
    nbytes = memory.nbytes()
    row = MemoryRow(
        frames_done,
        sorted(core.state.object_ids),
        memory.work.size,
        memory.long.size,
        nbytes["working"],
        nbytes["long_term"],
        memory.consolidations,
        memory.long_term_removals,
        rss_bytes(),
        statistics.fmean(log.window_ms),
        max(log.window_ms),
    )
    log.rows.append(row)
    log.window_ms.clear()
    return row


def run_stream(core: InferenceCore, source: FrameSource, plan: StreamPlan) -> StreamLog:
    log = StreamLog()
    for t in range(plan.frames):
        log.window_ms.append(planned_step(core, source, t, plan))
        log.peak_work = max(log.peak_work, core.state.memory.work.size)
        log.peak_long = max(log.peak_long, core.state.memory.long.size)
        if log.first_removal is None and core.state.memory.long_term_removals:
            log.first_removal = t
        if (t + 1) % plan.record_every == 0 or t + 1 == plan.frames:
            row = record(core, log, t + 1)
            print(
                f"  {row.frames_done:5d} frames: work {row.work:5d} long {row.long:5d} "
                f"RSS {row.rss_bytes / MIB:7.1f} MiB {row.mean_ms:6.0f} ms/frame",
                flush=True,
            )
    return log


def probe_ms(kind: EngineKind, pool: EnginePool, source: FrameSource, frames: int) -> float:
    """Median step time over ``frames`` frames after the prompt frame and one warm-up frame."""
    core = InferenceCore(pool.get(kind).engines, XMemConfig())
    mask = blob_mask(source.height, source.width, 3, [1, 2])
    step_ms(core, source.frame(0), mask)
    times = [step_ms(core, source.frame(t), None)[0] for t in range(1, frames + 2)]
    return statistics.median(times[1:])


@dataclass(frozen=True)
class MemoryChoice:
    """Which engine and size the long stream runs at, and why."""

    kind: EngineKind
    size: tuple[int, int]
    probes: list[tuple[EngineKind, tuple[int, int], float]]  # engine, size, median ms
    note: str


def choose_engine(args: argparse.Namespace, pool: EnginePool, size: tuple[int, int]) -> MemoryChoice:
    source = FrameSource.make(*size)
    kinds = engine_kinds(args.engines) if args.memory_engine == "auto" else [KINDS[args.memory_engine]]
    probes = [(kind, size, probe_ms(kind, pool, source, args.probe_frames)) for kind in kinds]
    for kind, _, ms in probes:
        print(f"  probe {kind:<11} {size[0]}×{size[1]}: {ms:.0f} ms/frame", flush=True)
    fastest = min(probes, key=lambda p: p[2])
    pool.release([kind for kind in kinds if kind != fastest[0]])
    return MemoryChoice(fastest[0], size, probes, "")


def fit_budget(args: argparse.Namespace, pool: EnginePool, choice: MemoryChoice) -> MemoryChoice:
    """Halve the resolution while the projected stream exceeds the budget."""
    size, probes = choice.size, list(choice.probes)
    ms, requested = next(p[2] for p in probes if p[0] == choice.kind), size
    while ms * args.memory_frames / 60_000 > args.memory_budget_min and min(size) >= 64:
        size = (size[0] // 2, size[1] // 2)
        ms = probe_ms(choice.kind, pool, FrameSource.make(*size), args.probe_frames)
        probes.append((choice.kind, size, ms))
        print(f"  probe {choice.kind:<11} {size[0]}×{size[1]}: {ms:.0f} ms/frame", flush=True)
    note = ""
    if size != requested:
        note = (
            f"At the requested {requested[0]}×{requested[1]}, {args.memory_frames} frames would have taken "
            f"over {args.memory_budget_min:g} minutes on this machine, so the stream ran at "
            f"{size[0]}×{size[1]} (halved until the projection fitted)."
        )
    return MemoryChoice(choice.kind, size, probes, note)


def run_memory(args: argparse.Namespace, pool: EnginePool, argv: Sequence[str]) -> str:
    start, load_start = time.perf_counter(), os.getloadavg()
    choice = fit_budget(args, pool, choose_engine(args, pool, args.memory_size))
    if choice.note:
        print(f"  {choice.note}", flush=True)
    config = XMemConfig(max_long_term_elements=args.long_term_cap)
    plan = StreamPlan(args.memory_frames, args.add_at, args.remove_at, args.record_every)
    core = InferenceCore(pool.get(choice.kind).engines, config)
    log = run_stream(core, FrameSource.make(*choice.size), plan)
    run = RunInfo(argv, time.perf_counter() - start, load_start, os.getloadavg())
    return memory_section(log, choice, config, plan, pool.get(choice.kind), run)


def memory_table(rows: list[MemoryRow]) -> str:
    lines = [
        "| frames | objects | working elements | long-term elements | working MiB | long-term MiB "
        "| consolidations | long-term removals | RSS MiB | mean ms/frame | max ms/frame |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.frames_done} | {','.join(map(str, r.objects))} | {r.work} | {r.long} "
            f"| {r.work_bytes / MIB:.2f} | {r.long_bytes / MIB:.2f} | {r.consolidations} | {r.removals} "
            f"| {r.rss_bytes / MIB:.0f} | {r.mean_ms:.0f} | {r.max_ms:.0f} |"
        )
    return "\n".join(lines)


def frame_elements(size: tuple[int, int]) -> int:
    """Memory elements per frame: the padded frame's positions at stride 16."""
    return -(-size[0] // STRIDE) * -(-size[1] // STRIDE)


def row_at(rows: list[MemoryRow], frames_done: int) -> MemoryRow:
    """The first row at or after ``frames_done`` (the last row when none is)."""
    return next((r for r in rows if r.frames_done >= frames_done), rows[-1])


def rss_line(early: MemoryRow, last: MemoryRow) -> str:
    """RSS growth against the memories' own growth: what is left over would be a leak."""
    growth = (last.rss_bytes - early.rss_bytes) / MIB
    own = (last.work_bytes + last.long_bytes - early.work_bytes - early.long_bytes) / MIB
    flat = growth - own <= 0.05 * early.rss_bytes / MIB
    return (
        f"- RSS after {early.frames_done} frames {early.rss_bytes / MIB:.0f} MiB, after "
        f"{last.frames_done} frames {last.rss_bytes / MIB:.0f} MiB ({growth:+.1f} MiB; the memories' own "
        f"bytes {own:+.1f} MiB): "
        + ("flat — no growth beyond the memories (5 % margin)." if flat else "**grows beyond the memories**.")
    )


def cap_line(log: StreamLog, config: XMemConfig, plan: StreamPlan) -> str:
    if log.first_removal is None:
        return (
            f"- The long-term cap ({config.max_long_term_elements}) was not reached in {plan.frames} frames "
            "(each consolidation adds up to P prototypes whatever the frame size); more frames or "
            "`--long-term-cap` show removal."
        )
    return (
        f"- Long-term removal first ran on frame {log.first_removal} (each consolidation adds up to "
        f"P = {config.num_prototypes} prototypes whatever the frame size, so the cap's frame does not "
        "depend on the resolution)."
    )


def verdict(log: StreamLog, config: XMemConfig, size: tuple[int, int], plan: StreamPlan) -> str:
    early, last = row_at(log.rows, plan.add_at), log.rows[-1]
    work_cap = config.max_mid_term_frames * frame_elements(size)
    bounded = log.peak_work <= work_cap and log.peak_long <= config.max_long_term_elements
    return "\n".join(
        [
            rss_line(early, last),
            f"- Peak working memory {log.peak_work} elements (cap T_max × h·w = "
            f"{config.max_mid_term_frames} × {frame_elements(size)} = {work_cap}); peak long-term "
            f"{log.peak_long} elements (cap {config.max_long_term_elements}): "
            + ("both under their caps." if bounded else "**over a cap**."),
            f"- {last.consolidations} consolidations and {last.removals} long-term removals; objects at the "
            f"end {last.objects} (object 3 added at frame {plan.add_at}, object 1 removed at frame "
            f"{plan.remove_at}).",
            cap_line(log, config, plan),
        ]
    )


def probe_table(probes: list[tuple[EngineKind, tuple[int, int], float]]) -> str:
    lines = ["| engine | size | median ms/frame |", "|---|---|---:|"]
    lines += [f"| {kind} | {h}×{w} | {ms:.0f} |" for kind, (h, w), ms in probes]
    return "\n".join(lines)


def memory_section(
    log: StreamLog,
    choice: MemoryChoice,
    config: XMemConfig,
    plan: StreamPlan,
    loaded: LoadedEngines,
    run: RunInfo,
) -> str:
    (height, width), hw = choice.size, frame_elements(choice.size)
    intro = (
        f"One stream of {plan.frames} frames at {height}×{width} ({hw} memory elements per frame) on "
        f"`{choice.kind}`, the fastest engine in a short probe (2 objects, {height}×{width} unless "
        f"noted; median of the frames after one warm-up). Settings: the paper's (memory frame every "
        f"{config.mem_every}, T_min {config.min_mid_term_frames}, T_max {config.max_mid_term_frames}, "
        f"{config.num_prototypes} prototypes, long-term cap {config.max_long_term_elements}). Objects 1 and "
        f"2 from frame 0, object 3 added on frame {plan.add_at} (a second object group), object 1 "
        f"removed before frame {plan.remove_at}. A row every {plan.record_every} frames; bytes are "
        "`MemoryManager.nbytes()` (keys, shrinkage, selection, usage, values; not the sensory "
        "memory), RSS is VmRSS of /proc/self/status, times are per `step` since the previous row. "
        + WEIGHTS_NOTE
        + " (Which long-term elements are dropped depends on usage and so on the weights; how many "
        "does not.)"
    )
    parts = ["## XMem memory over a long stream (CPU)", intro]
    parts += [choice.note] if choice.note else []
    parts += [environment([loaded], run), "Engine probe:", probe_table(choice.probes)]
    parts += [memory_table(log.rows), "Verdict:", verdict(log, config, choice.size, plan)]
    parts.append(f"Engine setup in a temporary model repository: {loaded.kind} {setup_cell(loaded)}.")
    return "\n\n".join(parts)


# --- environment and output ----------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """How one measurement ran."""

    argv: Sequence[str]
    wall_s: float
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]


def ort_threads(loaded: Sequence[LoadedEngines]) -> str:
    """The ONNX sessions' intra-op thread setting; 0 means ORT chose its default pool size."""
    for e in loaded:
        if isinstance(e.engines.encode_key, OnnxRunner):
            setting = e.engines.encode_key.session.get_session_options().intra_op_num_threads
            return f"{setting} (ORT's default pool)" if setting == 0 else str(setting)
    return "n/a (no ONNX engine run)"


def loads(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def environment(loaded: Sequence[LoadedEngines], run: RunInfo) -> str:
    command = shlex.join(["python", "bench/xmem_core.py", *run.argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            device_line(),
            f"- Threads: torch {torch.get_num_threads()}, ORT intra-op {ort_threads(loaded)}.",
            f"- Versions: {versions()}.",
            f"- Command: `{command}` (run from the repository root), {date}; this part {run.wall_s:.0f} s.",
            f"- Load average (1, 5, 15 min) at start {loads(run.load_start)}, at end {loads(run.load_end)} "
            "(other jobs share these cores; above the core count, expect noise).",
        ]
    )


def publish(path: Path, name: str, body: str) -> None:
    print()
    print(body)
    write_section(path, name, body)
    print(f"\nwrote section {name} of {path}", flush=True)


# --- command line --------------------------------------------------------------------------


def engine_kinds(text: str) -> list[EngineKind]:
    unknown = [name for name in split(text) if name not in KINDS]
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; known: {', '.join(KINDS)}")
    return [KINDS[name] for name in split(text)]


def size_arg(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 480x864; got {text!r}") from error
    if height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16; got {text!r}")
    return height, width


def counts_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in split(text)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or min(values) < 1 or max(values) > 255:
        raise argparse.ArgumentTypeError(f"object counts must be 1..255, got {text!r}")
    return values


def add_speed_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speed")
    group.add_argument("--size", type=size_arg, default=(480, 864), help="HxW (default 480x864)")
    group.add_argument("--objects", type=counts_arg, default=[1, 2, 4], help="object counts (default 1,2,4)")
    group.add_argument("--warmup", type=int, default=1, help="untimed frames after the prompt frame")
    group.add_argument("--frames", type=int, default=4, help="timed frames per case (default 4)")


def add_memory_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memory")
    group.add_argument("--memory-size", type=size_arg, default=(192, 320), help="HxW (default 192x320)")
    group.add_argument("--memory-frames", type=int, default=2000)
    group.add_argument("--memory-engine", default="auto", choices=["auto", *KINDS], help="auto: fastest")
    group.add_argument("--long-term-cap", type=int, default=XMemConfig().max_long_term_elements)
    group.add_argument("--add-at", type=int, default=500, help="frame on which object 3 arrives")
    group.add_argument("--remove-at", type=int, default=1000, help="frame before which object 1 goes")
    group.add_argument("--record-every", type=int, default=100)
    group.add_argument("--probe-frames", type=int, default=4, help="timed frames per engine probe")
    group.add_argument("--memory-budget-min", type=float, default=12.0, help="halve the size above this")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", default="all", choices=["speed", "memory", "all"])
    parser.add_argument("--engines", default="eager,torchscript,onnx", help="comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    add_speed_flags(parser)
    add_memory_flags(parser)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.memory_frames < 1 or args.record_every < 1:
        parser.error("--frames, --memory-frames and --record-every must be positive, --warmup at least 0")
    if args.probe_frames < 1:
        parser.error("--probe-frames must be positive")
    return args


def run_apart(argv: Sequence[str]) -> int:
    """``all``: each part in its own process, so the memory part's RSS starts clean."""
    rest = [a for a in argv if a != "all"]
    for part in ("speed", "memory"):
        code = subprocess.call([sys.executable, str(Path(__file__).resolve()), part, *rest])
        if code:
            return code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.part == "all":
        code = run_apart(argv)
        print(f"total {time.perf_counter() - start:.0f} s")
        return code
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vidserve-bench-") as repository:
        pool = EnginePool(Path(repository))
        if args.part == "speed":
            publish(args.output, SPEED_SECTION, run_speed(args, pool, argv))
        else:
            publish(args.output, MEMORY_SECTION, run_memory(args, pool, argv))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
