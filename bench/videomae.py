"""The clip encoder's cost: clips/s and ms per clip for vit-s and vit-b at several
``keep_ratio``s on each engine, and peak memory against the window's length, written to
BENCHMARKS.md.

One clip is ``embed`` (16 frames of 224², all tokens) then ``encode`` of the kept tokens
(``tube`` keep: the same evenly spread spatial positions in every time slice). The keep
ratios of one engine are timed in turns, so a busy moment of this shared machine hits them
alike; GFLOPs are the model's own count (``network.gflops``). Peak memory is the resident
set a fresh process gains while it runs one eager clip (sampled every millisecond), over
what it held before the clip. Weights: the hashed-weight recipe
(``tests.models.test_videomae``), with the released checkpoints' shapes and so their cost;
the released files cannot be fetched on this machine.

Run from the repository root: ``python bench/videomae.py [--archs vit-s,vit-b]
[--engines eager,torchscript,onnx] [--ratios 1,0.5,0.25] [--repeats 3] [--write]``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; the models package lives at the root
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from report import device_line, load_average, split, versions, write_section  # noqa: E402

from models.runtime import EngineKind  # noqa: E402
from models.videomae.checkpoint import expected_shapes, load_videomae  # noqa: E402
from models.videomae.config import get_config  # noqa: E402
from models.videomae.export import VideoMAEEngines, eager_engines, export_videomae, load_engines  # noqa: E402
from models.videomae.frames import tube_keep  # noqa: E402
from models.videomae.network import VideoViT, gflops, select, tokens_of  # noqa: E402
from tests.hashed_weights import hashed_state_dict  # noqa: E402

SECTION = "videomae"
FRAMES, SIZE = 16, 224  # why: the released checkpoints' clip


@dataclass(frozen=True)
class Row:
    arch: str
    engine: str
    ratio: float
    tokens: int  # kept
    gflop: float
    ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)


def hashed_net(arch: str) -> VideoViT:
    return load_videomae(hashed_state_dict(expected_shapes(get_config(arch))))


def engines_of(net: VideoViT, kind: EngineKind, repository: Path, arch: str) -> VideoMAEEngines:
    if kind == "eager":
        return eager_engines(net)
    folder, _ = export_videomae(net, repository, "onnx" if kind == "onnx" else "torchscript", model_name=arch)
    return load_engines(folder, kind)


def one_clip(engines: VideoMAEEngines, clip: torch.Tensor, keep: torch.Tensor | None) -> Callable[[], object]:
    def run() -> object:
        tokens, positions = engines.embed(clip)
        if keep is not None:
            tokens, positions = select(tokens, positions, keep)
        return engines.encode(tokens, positions)

    return run


def time_engine(
    arch: str, kind: EngineKind, ratios: Sequence[float], repeats: int, repository: Path
) -> list[Row]:
    config = get_config(arch)
    engines = engines_of(hashed_net(arch), kind, repository, arch)
    clip = torch.randint(0, 256, (1, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8)
    grid = (FRAMES // config.tubelet, SIZE // config.patch, SIZE // config.patch)
    total = tokens_of(config, FRAMES, SIZE, SIZE)
    keeps = [None if r == 1 else tube_keep(*grid, r) for r in ratios]
    runs = [one_clip(engines, clip, keep) for keep in keeps]
    with torch.inference_mode():
        for run in runs:
            run()  # warm-up: first-call profiling and allocations
        times: list[list[float]] = [[] for _ in runs]
        for _ in range(repeats):  # the ratios in turns
            for run, out in zip(runs, times, strict=True):
                start = time.perf_counter()
                run()
                out.append((time.perf_counter() - start) * 1000)
    rows = []
    for ratio, keep, ms in zip(ratios, keeps, times, strict=True):
        kept = total if keep is None else int(keep.numel())
        rows.append(Row(arch, kind, ratio, kept, gflops(config, total, kept), ms))
        print(
            f"{arch} {kind:<12} keep {ratio:<5} {kept:5d} tokens {statistics.median(ms):9.0f} ms", flush=True
        )
    return rows


# --- peak memory, one fresh process per point --------------------------------------------


def resident_bytes() -> int:
    """This process's resident set now (Linux: /proc/self/statm, in pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(arch: str, frames: int, ratio: float) -> None:
    """Runs in a fresh process: prints the most the resident set grew during one eager clip,
    sampled every millisecond (the high-water mark of loading the weights is above a short
    clip's, so ``ru_maxrss`` would not tell)."""
    config = get_config(arch)
    engines = eager_engines(hashed_net(arch))
    clip = torch.randint(0, 256, (1, frames, SIZE, SIZE, 3), dtype=torch.uint8)
    grid = (frames // config.tubelet, SIZE // config.patch, SIZE // config.patch)
    keep = None if ratio == 1 else tube_keep(*grid, ratio)
    gc.collect()
    before, peak, done = resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with torch.inference_mode():
        one_clip(engines, clip, keep)()
    done.set()
    sampler.join()
    print(json.dumps({"peak_bytes": max(0, peak[0] - before)}))


def peak_memory(arch: str, frames: int, ratio: float) -> int:
    command = [sys.executable, __file__, "--peak-child", arch, str(frames), str(ratio)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    peak = int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])
    print(f"{arch} {frames} frames keep {ratio}: peak +{peak / 2**20:.0f} MiB", flush=True)
    return peak


# --- the section -------------------------------------------------------------------------


def speed_table(rows: list[Row]) -> str:
    lines = [
        "| arch | engine | keep_ratio | tokens run | GFLOP per clip | ms per clip (median) | clips/s "
        "| vs keep 1.0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        full = next(r for r in rows if (r.arch, r.engine, r.ratio) == (row.arch, row.engine, 1.0))
        lines.append(
            f"| {row.arch} | {row.engine} | {row.ratio:g} | {row.tokens} | {row.gflop:.0f} | "
            f"{row.median_ms:.0f} | {1000 / row.median_ms:.2f} | {row.median_ms / full.median_ms:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def memory_table(points: list[tuple[str, int, float, int]]) -> str:
    lines = [
        "| arch | frames_per_clip | keep_ratio | tokens run | GFLOP | peak memory (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arch, frames, ratio, peak in points:
        config = get_config(arch)
        total = tokens_of(config, frames, SIZE, SIZE)
        kept = total if ratio == 1 else round(total * ratio)
        lines.append(
            f"| {arch} | {frames} | {ratio:g} | {kept} | {gflops(config, total, kept):.0f} "
            f"| {peak / 2**20:.0f} |"
        )
    return "\n".join(lines) + "\n"


def section(rows: list[Row], points: list[tuple[str, int, float, int]], info: dict[str, str]) -> str:
    return "\n".join(
        [
            "## Clip encoder: VideoMAE V2 per clip (CPU)",
            "",
            "One clip is `embed` (16 frames of 224², every token) then `encode` of the kept tokens "
            "(`tube` keep: the same evenly spread spatial positions in every time slice); the keep ratios "
            "of one engine timed in turns, median of the repeats after one warm-up. GFLOP is the model's own "
            "count (`models.videomae.network.gflops`: the Conv3d over every token, the blocks over the kept "
            "ones). Peak memory: the resident set a fresh process gains running one eager clip. Weights: the "
            "hashed-weight recipe, with the released checkpoints' shapes (so their cost).",
            "",
            device_line(),
            f"- Threads: torch {torch.get_num_threads()}.",
            f"- Versions: {versions()}.",
            f"- Command: `{info['command']}` (from the repository root), {info['when']}; "
            f"whole run {info['wall']}.",
            f"- Load average (1, 5, 15 min) at start {info['load_start']}, at end {info['load_end']}.",
            "",
            speed_table(rows),
            "Peak memory against the window's length (eager, one clip):",
            "",
            memory_table(points),
        ]
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", default="vit-s,vit-b")
    parser.add_argument("--engines", default="eager,torchscript,onnx")
    parser.add_argument("--ratios", default="1,0.5,0.25")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-frames", default="16,32,64", help="window lengths for the memory table")
    parser.add_argument("--memory-arch", default="vit-b")
    parser.add_argument("--write", action="store_true", help="replace this section of BENCHMARKS.md")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.peak_child:
        arch, frames, ratio = args.peak_child
        peak_memory_child(arch, int(frames), float(ratio))
        return 0
    started, load_start = time.perf_counter(), load_average()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ratios = [float(r) for r in split(args.ratios)]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as repository:
        for arch in split(args.archs):
            for kind in split(args.engines):
                rows += time_engine(arch, kind, ratios, args.repeats, Path(repository))  # type: ignore[arg-type]
    points = [
        (args.memory_arch, int(frames), ratio, peak_memory(args.memory_arch, int(frames), ratio))
        for frames in split(args.memory_frames)
        for ratio in (1.0, 0.25)
    ]
    info = {
        "command": shlex.join(["python", "bench/videomae.py", *argv]),
        "when": when,
        "wall": f"{time.perf_counter() - started:.0f} s",
        "load_start": load_start,
        "load_end": load_average(),
    }
    body = section(rows, points, info)
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
