"""What keeping each frame's encoder features saves for RIFE 4.22+, and write it to BENCHMARKS.md.

For each release with a feature encoder, one stream pair at factor N costs either
    whole: the whole network on N-1 rows (the encoder runs on both frames in every row), or
    split: the encoder on the pair's new frame (the other's features are kept from the
           previous pair), then the flow part on N-1 rows,
which is what the server did before and does now. Weights: the hashed-weight recipe
(``tests.hashed_weights``), which has the released checkpoints' shapes and so their FLOPs;
4.22+ checkpoints cannot be fetched on this machine. Inputs: random 720p frames at scale 1
(the cost does not depend on the pixels). Engines are exported into a temporary repository.

Run from the repository root: ``python bench/rife_features.py [--engine torchscript]
[--factors 2,4] [--repeats 7] [--write]``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; the models package lives at the root
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from report import device_line, split, versions, write_section  # noqa: E402

from models.rife.checkpoint import expected_shapes  # noqa: E402
from models.rife.export import Part  # noqa: E402
from models.rife.loading import make_runner  # noqa: E402
from models.rife.spec import SPECS, get_spec  # noqa: E402
from models.runtime import EngineKind, Runner  # noqa: E402
from tests.hashed_weights import hashed_state_dict  # noqa: E402

SECTION = "rife_features"
HEIGHT, WIDTH = 720, 1280
TABLE_HEAD = "| release | factor N | rows | whole (ms) | kept features (ms) | saved |"
TABLE_RULE = "|---|---|---|---|---|---|"


def alternating_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median ms of each, timed in turns so that a busy or throttled moment hits both alike
    (on this 2-core machine one call varies by ±10% from run to run)."""
    first(), second()  # warm-up: first-call profiling and allocations
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def pair_ms(
    whole: Runner, encoder: Runner, flow: Runner, pair: tuple[torch.Tensor, ...], factor: int, repeats: int
) -> tuple[float, float]:
    """Median ms of one pair at ``factor``: the whole network, and kept features + flow."""
    img0, img1, f0 = pair  # 1×3×Hp×Wp each, f0: frame0's kept features
    n = factor - 1
    t, scale = torch.tensor([i / factor for i in range(1, factor)]), torch.tensor([1.0])
    a, b = img0.expand(n, -1, -1, -1), img1.expand(n, -1, -1, -1)

    def split_pair() -> None:
        (f1,) = encoder(img1)  # the pair's new frame; frame0's features were kept
        flow(a, b, f0.expand(n, -1, -1, -1), f1.expand(n, -1, -1, -1), t, scale)

    return alternating_medians(lambda: whole(a, b, t, scale), split_pair, repeats)


def measure(version: str, engine: EngineKind, factors: list[int], repeats: int, tmp: Path) -> list[str]:
    """Table rows for one release: factor, whole ms, split ms, saving."""
    model, spec = f"rife-{version}", get_spec(version)
    weights = tmp / f"{model}.pkl"
    torch.save(hashed_state_dict(expected_shapes(spec)), weights)

    def runner(part: Part) -> Runner:
        return make_runner(model, weights, engine, repository=tmp / "repository", part=part)

    whole, encoder, flow = runner("full"), runner("encoder"), runner("flow")
    hw = spec.padded_size(HEIGHT, WIDTH, 1.0)
    gen = torch.Generator().manual_seed(0)
    img0, img1 = torch.rand(1, 3, *hw, generator=gen), torch.rand(1, 3, *hw, generator=gen)
    (f0,) = encoder(img0)
    rows = []
    for factor in factors:
        whole_ms, split_ms = pair_ms(whole, encoder, flow, (img0, img1, f0), factor, repeats)
        saved = 1 - split_ms / whole_ms
        cells = [version, str(factor), str(factor - 1), f"{whole_ms:.0f}", f"{split_ms:.0f}", f"{saved:.1%}"]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def section(rows: list[str], args: argparse.Namespace, argv: Sequence[str], wall_s: float) -> str:
    command = shlex.join(["python", "bench/rife_features.py", *argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n\n".join(
        [
            "## RIFE 4.22+: kept encoder features (CPU)",
            f"One stream pair at {WIDTH}×{HEIGHT} (padded as the pipeline pads), scale 1, "
            f"{args.engine}: the whole network on the pair's N-1 rows (what the server did before), "
            "against the encoder on the pair's new frame plus the flow part on the N-1 rows (what it "
            "does now: a session keeps the previous frame's features). Hashed-recipe weights with "
            "the released shapes; median of "
            f"{args.repeats} after one warm-up, the two timed in turns. One call varies by about ±10% "
            "from run to run on this machine, so differences below that are noise.",
            "\n".join(
                [
                    device_line(),
                    f"- Threads: torch {torch.get_num_threads()}.",
                    f"- Versions: {versions()}.",
                    f"- Command: `{command}` (from the repository root), {date}; whole run {wall_s:.0f} s.",
                ]
            ),
            "\n".join([TABLE_HEAD, TABLE_RULE, *rows]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--engine", default="torchscript", choices=["eager", "torchscript", "onnx"])
    parser.add_argument("--factors", default="2,4", help="comma-separated frame-rate factors")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="replace this section of BENCHMARKS.md")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    factors = [int(f) for f in split(args.factors)]
    releases = [v for v, spec in SPECS.items() if spec.encoder_channels]
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vidserve-bench-") as tmp:
        for version in releases:
            rows += measure(version, args.engine, factors, args.repeats, Path(tmp))
    body = section(rows, args, argv, time.perf_counter() - start)
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
