"""Time RIFE v4.0 (real weights) on each local engine and write the table to BENCHMARKS.md.

Engines: eager torch, TorchScript and ONNX Runtime (CPU provider), fp32; with ``--fp16`` also
the fp16 TorchScript and ONNX engines (slow on CPU, hence off by default). Engines are
exported into a temporary model repository, so the user's cache repository is never touched.

Inputs: scikit-image's astronaut photograph resized with Pillow, and the same view shifted
by a few pixels, so the flow is small and the 4.0 large-motion retry does not fire (the
table's "calls/run" column shows it). 720p runs at scale 1, 1080p at scale 0.5 (the 4K
setting), each padded as the pipeline pads. One call is ``Interpolator.run_padded`` on a
batch of B timesteps of the one pair (B from ``--batch``).

Run from the repository root: ``python bench/rife_engines.py [--sizes 720p,1080p]
[--batch 1,2] [--warmup 1] [--repeats 5] [--engines eager,torchscript,onnx] [--fp16]``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from torch import Tensor  # noqa: E402

from models.repository import Format  # noqa: E402
from models.rife.inference import Interpolator, to_padded  # noqa: E402
from models.rife.loading import ensure_engine, make_runner  # noqa: E402
from models.rife.spec import RifeSpec, get_spec  # noqa: E402
from models.runtime import ENGINE_KINDS, EngineKind, OnnxRunner, Runner  # noqa: E402
from models.weights.fetch import resolve_weights  # noqa: E402

T = TypeVar("T")

MODEL = "rife-4.0"
SECTION = "rife_engines"
# the second frame is the first one's view moved by this many pixels (x, y): small motion
SHIFT_XY = (4, 2)
KINDS: dict[str, EngineKind] = {kind: kind for kind in ENGINE_KINDS}
EXPORT_FORMATS: dict[EngineKind, Format] = {"torchscript": "torchscript", "onnx": "onnx"}


@dataclass(frozen=True)
class SizeCase:
    """One input size and the scale it runs at."""

    name: str  # "720p"
    height: int
    width: int
    scale: float  # RIFE's scale: 1 for HD, 0.5 as for 4K


SIZES: dict[str, SizeCase] = {
    "720p": SizeCase("720p", 720, 1280, 1.0),
    "1080p": SizeCase("1080p", 1080, 1920, 0.5),
    "2160p": SizeCase("2160p", 2160, 3840, 0.5),
}


@dataclass(frozen=True)
class EngineCase:
    """An engine kind and its precision."""

    kind: EngineKind
    fp16: bool

    @property
    def label(self) -> str:
        return f"{self.kind} {'fp16' if self.fp16 else 'fp32'}"


@dataclass
class LoadedEngine:
    """A ready engine and what it cost to get there."""

    case: EngineCase
    interpolator: Interpolator
    counter: CallCounter
    export_s: float | None  # None for eager: nothing to export
    load_s: float


@dataclass(frozen=True)
class Row:
    """One engine × size × batch measurement."""

    engine: str
    size: SizeCase
    padded_hw: tuple[int, int]
    batch: int
    times_ms: list[float]
    calls_per_run: float  # engine calls per run_padded: 1, or 2 when the 4.0 retry fires

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.times_ms, 90))

    @property
    def per_frame_ms(self) -> float:
        return self.median_ms / self.batch


class CallCounter:
    """A runner that counts its calls, so the table shows whether the 4.0 retry ran."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.kind = runner.kind
        self.calls = 0

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        self.calls += 1
        return self.runner(*inputs)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="720p,1080p", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--batch", default="1,2", help="timesteps per engine call, comma-separated")
    parser.add_argument("--engines", default="eager,torchscript,onnx", help="comma-separated")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--fp16", action="store_true", help="also time the fp16 TorchScript and ONNX engines")
    parser.add_argument("--weights", type=Path, default=None, help="a flownet.pkl instead of the registry's")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    return args


def size_cases(text: str) -> list[SizeCase]:
    unknown = [name for name in split(text) if name not in SIZES]
    if unknown:
        raise SystemExit(f"unknown sizes {unknown}; known: {', '.join(SIZES)}")
    return [SIZES[name] for name in split(text)]


def engine_cases(text: str, fp16: bool) -> list[EngineCase]:
    unknown = [name for name in split(text) if name not in KINDS]
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; known: {', '.join(KINDS)}")
    cases = [EngineCase(KINDS[name], False) for name in split(text)]
    exported_fp16 = [EngineCase(c.kind, True) for c in cases if c.kind != "eager"]
    return cases + (exported_fp16 if fp16 else [])


def make_pair(size: SizeCase) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 H×W×3 frames: a view of the astronaut photograph and the view moved by SHIFT_XY."""
    from skimage import data  # why here: test-only dependency, needed by this script alone

    dx, dy = SHIFT_XY
    side = max(size.width, size.height) + 2 * max(dx, dy)
    photo = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BICUBIC)
    base = np.asarray(photo)
    top, left = (side - size.height) // 2, (side - size.width) // 2
    frame0 = base[top : top + size.height, left : left + size.width]
    frame1 = base[top + dy : top + dy + size.height, left + dx : left + dx + size.width]
    return np.ascontiguousarray(frame0), np.ascontiguousarray(frame1)


def padded_inputs(spec: RifeSpec, size: SizeCase, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """img0, img1: float32 B×3×Hp×Wp (contiguous copies); timestep: float32 B, i/(B+1)."""
    frame0, frame1 = make_pair(size)
    padded_hw = spec.padded_size(size.height, size.width, size.scale)
    img0 = to_padded(frame0, padded_hw).repeat(batch, 1, 1, 1)
    img1 = to_padded(frame1, padded_hw).repeat(batch, 1, 1, 1)
    timestep = torch.tensor([i / (batch + 1) for i in range(1, batch + 1)], dtype=torch.float32)
    return img0, img1, timestep


def load_engine(case: EngineCase, weights: Path, repository: Path) -> LoadedEngine:
    """Export (into ``repository``) and load one engine, timing each step."""
    export_s = None
    fmt = EXPORT_FORMATS.get(case.kind)
    if fmt is not None:
        _, export_s = timed(lambda: ensure_engine(MODEL, weights, fmt, fp16=case.fp16, repository=repository))
    runner, load_s = timed(
        lambda: make_runner(MODEL, weights, case.kind, fp16=case.fp16, repository=repository)
    )
    counter = CallCounter(runner)
    interpolator = Interpolator(get_spec(MODEL), counter, scene_change_threshold=None)
    return LoadedEngine(case, interpolator, counter, export_s, load_s)


def measure(engine: LoadedEngine, size: SizeCase, batch: int, warmup: int, repeats: int) -> Row:
    """Warm up, then time ``repeats`` calls of run_padded on one padded batch."""
    img0, img1, timestep = padded_inputs(engine.interpolator.spec, size, batch)

    def call() -> Tensor:
        return engine.interpolator.run_padded(img0, img1, timestep, size.scale)

    for _ in range(warmup):
        call()
    engine.counter.calls = 0
    times_ms = [timed(call)[1] * 1000 for _ in range(repeats)]
    padded_hw = (img0.shape[-2], img0.shape[-1])
    return Row(engine.case.label, size, padded_hw, batch, times_ms, engine.counter.calls / repeats)


def measure_all(
    engines: list[LoadedEngine], sizes: list[SizeCase], batches: list[int], args: argparse.Namespace
) -> list[Row]:
    """Every size × batch × engine, engines innermost so each comparison is taken close in time."""
    rows = []
    for size in sizes:
        for batch in batches:
            for engine in engines:
                rows.append(measure(engine, size, batch, args.warmup, args.repeats))
                print(
                    f"  {rows[-1].engine:<16} {size.name:<6} B={batch}: {rows[-1].median_ms:9.1f} ms",
                    flush=True,
                )
    return rows


def speedup(row: Row, rows: list[Row]) -> str:
    """Eager fp32's median over this row's, same size and batch: above 1 is faster than eager."""
    eager = [r for r in rows if r.engine == "eager fp32" and r.size == row.size and r.batch == row.batch]
    return f"{eager[0].median_ms / row.median_ms:.2f}×" if eager else "n/a"


def results_table(rows: list[Row]) -> str:
    lines = [
        "| engine | size (padded H×W) | scale | batch | median ms/call | p90 ms/call | ms/frame "
        "| speed-up vs eager | calls/run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = f"{r.size.name} ({r.padded_hw[0]}×{r.padded_hw[1]})"
        lines.append(
            f"| {r.engine} | {size} | {r.size.scale:g} | {r.batch} | {r.median_ms:.1f} | {r.p90_ms:.1f} "
            f"| {r.per_frame_ms:.1f} | {speedup(r, rows)} | {r.calls_per_run:g} |"
        )
    return "\n".join(lines)


def setup_table(engines: list[LoadedEngine]) -> str:
    lines = ["| engine | export s | load s |", "|---|---:|---:|"]
    for e in engines:
        export = "—" if e.export_s is None else f"{e.export_s:.1f}"
        lines.append(f"| {e.case.label} | {export} | {e.load_s:.2f} |")
    return "\n".join(lines)


def ort_threads(engines: list[LoadedEngine]) -> str:
    """The ONNX sessions' intra-op thread setting; 0 means ORT chose its default pool size."""
    for e in engines:
        if isinstance(e.counter.runner, OnnxRunner):
            setting = e.counter.runner.session.get_session_options().intra_op_num_threads
            return f"{setting} (ORT's default pool)" if setting == 0 else str(setting)
    return "n/a (no ONNX engine run)"


def environment(engines: list[LoadedEngine], argv: Sequence[str], wall_s: float) -> str:
    command = shlex.join(["python", "bench/rife_engines.py", *argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            device_line(),
            f"- Threads: torch {torch.get_num_threads()} (default), ORT intra-op {ort_threads(engines)}.",
            f"- Versions: {versions()}.",
            f"- Command: `{command}` (run from the repository root), {date}; whole run {wall_s:.0f} s.",
        ]
    )


def section(
    rows: list[Row], engines: list[LoadedEngine], args: argparse.Namespace, argv: Sequence[str], wall_s: float
) -> str:
    dx, dy = SHIFT_XY
    return "\n\n".join(
        [
            "## RIFE v4.0 engines (CPU)",
            f"RIFE v4.0 with its released weights (`{MODEL}`), one call = `Interpolator.run_padded` on one "
            f"pair repeated for B timesteps (t = i/(B+1)), 4.0 large-motion retry included. Inputs: "
            f"scikit-image's astronaut photograph resized with Pillow (bicubic), the second frame moved "
            f"by ({dx}, {dy}) px, zero-padded as the pipeline pads. {args.warmup} warm-up call(s), then "
            f"{args.repeats} timed calls per row; p90 interpolates linearly between samples. "
            "\"speed-up vs eager\" is eager fp32's median over the row's, same size and batch, same run. "
            '"calls/run" is engine calls per `run_padded` (2 would mean the retry fired).',
            environment(engines, argv, wall_s),
            results_table(rows),
            "Export into a temporary model repository (not the cache), then load:",
            setup_table(engines),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sizes, batches = size_cases(args.sizes), [int(b) for b in split(args.batch)]
    weights = resolve_weights(MODEL, args.weights, progress=False)
    with tempfile.TemporaryDirectory(prefix="vidserve-bench-") as repository:
        engines = [
            load_engine(case, weights, Path(repository)) for case in engine_cases(args.engines, args.fp16)
        ]
        rows = measure_all(engines, sizes, batches, args)
    body = section(rows, engines, args, argv, time.perf_counter() - start)
    print()
    print(body)
    write_section(args.output, SECTION, body)
    print(f"\nwrote {args.output}; total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
