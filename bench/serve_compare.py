"""Serve the same streams from two versions of vidserve, interleaved, and compare them.

Checks out ``--base`` (a git ref) into a temporary worktree and starts ``python -m server``
from it and from this checkout, side by side on free ports with the same settings
(``rife-4.0`` with its released weights, and ``xmem`` with the hashed-weight recipe, both on
TorchScript). Then, round after round, the same clients stream the same frames to one
server and then the other (the order alternates each round; one server works while the
other idles), over the real REST + websocket API with the serving benchmarks' own clients
(``serve_interpolation.py``, ``serve_segmentation.py``). Per workload it reports each
version's median frame latency and wall time over the rounds, and their ratios (this
checkout over the base: below 1 is faster). Interleaving makes both versions meet the same
load on this shared machine, so the ratio means more than either number.

Run from the repository root: ``python bench/serve_compare.py --base REF [--rounds 3]
[--write]``. Without ``--write`` the section is only printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; models/ and tests/ live at the root
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import serve_interpolation as interp  # noqa: E402
import serve_segmentation as seg  # noqa: E402
import torch  # noqa: E402
from report import device_line, load_average, versions, write_section  # noqa: E402

from models.weights.fetch import fetch  # noqa: E402
from tests.models.xmem_support import hashed_xmem  # noqa: E402
from tests.server.support import free_port  # noqa: E402

SECTION = "serve-compare"
READY_TIMEOUT_S = 900  # why: a first start exports both models' engines, minutes on 2 cores
SEGMENT_PROCESSING_SIZE = 240  # why: half XMem's 480 keeps a round short; the pipeline is the same


@dataclass(frozen=True)
class Workload:
    """One way of streaming, sent to each server in turn."""

    name: str  # for the table: "interpolate 360p × 4"
    sessions: int
    run: Callable[[str], Coroutine[Any, Any, tuple[list[float], float]]]  # base URL → (latencies s, wall s)


@dataclass
class Tally:
    """What one version did on one workload, over the rounds."""

    latencies_s: list[float] = field(default_factory=list)
    walls_s: list[float] = field(default_factory=list)


async def interpolation_run(url: str, clips: list[list[bytes]]) -> tuple[list[float], float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        sessions = [await interp.open_session(http, "jpeg") for _ in clips]
        logs, wall_s = await interp.stream_all([s for _, s in sessions], clips, interp.stream_clip)
        for session, _ in sessions:
            (await http.delete(session)).raise_for_status()
    _check_errors(url, [e for log in logs for e in log.errors])
    return [t for log in logs for t in log.latencies_s], wall_s


async def segmentation_run(url: str, clips: list[seg.Clip]) -> tuple[list[float], float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        sessions = [await seg.open_session(http, SEGMENT_PROCESSING_SIZE) for _ in clips]
        logs, wall_s = await interp.stream_all([s for _, s in sessions], clips, seg.stream_clip)
        for session, _ in sessions:
            (await http.delete(session)).raise_for_status()
    _check_errors(url, [e for log in logs for e in log.errors])
    return [t for log in logs for t in log.latencies_s], wall_s


def _check_errors(url: str, errors: list[str]) -> None:
    if errors:
        raise RuntimeError(f"{url}: frames answered with errors {errors}")


def workloads(sessions: Sequence[int], frames: int) -> list[Workload]:
    size = interp.SIZES["360p"]
    made: list[Workload] = []
    for n in sessions:
        clips = interp.make_clips(size, n, frames, "jpeg")
        made.append(
            Workload(f"interpolate {size.name} × {n}", n, functools.partial(interpolation_run, clips=clips))
        )
    for n in sessions:
        name = f"segment 480p→{SEGMENT_PROCESSING_SIZE} × {n}"
        made.append(Workload(name, n, functools.partial(segmentation_run, clips=seg.make_clips(n, frames))))
    return made


# --- the two servers -------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    label: str  # "base a1bccec" / "this checkout 1234abc"
    tree: Path  # the source tree the server runs from
    url: str = ""


def commit_of(tree: Path, ref: str = "HEAD") -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=tree, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vidserve-base-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=REPO_ROOT, check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO_ROOT, check=False)


@contextmanager
def server(tree: Path, weights: dict[str, Path], workdir: Path) -> Iterator[str]:
    """``python -m server`` from ``tree`` (its own packages first on the path), until ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSERVE_")}
    env |= {
        "PYTHONPATH": str(tree),
        "VIDSERVE_PORT": str(port),
        "VIDSERVE_MODELS": json.dumps(list(weights)),
        "VIDSERVE_WEIGHTS": json.dumps({k: str(v) for k, v in weights.items()}),
        "VIDSERVE_MODEL_REPOSITORY": str(workdir / "model_repository"),
        "VIDSERVE_ENGINE": "torchscript",
        "VIDSERVE_LOG_LEVEL": "warning",
    }
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=tree, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, workdir / "server.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server at {url} stopped:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready in {READY_TIMEOUT_S} s")


# --- the run ---------------------------------------------------------------------------


def measure(versions_: list[Version], loads: list[Workload], rounds: int) -> dict[tuple[str, str], Tally]:
    """One untimed round to warm every shape, then ``rounds`` timed, the order alternating."""
    tallies = {(v.label, w.name): Tally() for v in versions_ for w in loads}
    for r in range(rounds + 1):
        order = versions_ if r % 2 == 0 else versions_[::-1]
        for load in loads:
            for version in order:
                latencies, wall = asyncio.run(load.run(version.url))
                if r > 0:
                    tallies[version.label, load.name].latencies_s += latencies
                    tallies[version.label, load.name].walls_s.append(wall)
                print(f"round {r} {load.name:<28} {version.label:<24} wall {wall:6.2f} s", flush=True)
    return tallies


def results_table(
    versions_: list[Version], loads: list[Workload], tallies: dict[tuple[str, str], Tally]
) -> str:
    base, new = versions_
    rows = [
        f"| workload | frames timed | {base.label}: p50 ms | {new.label}: p50 ms | p50 ratio "
        f"| {base.label}: median wall s | {new.label}: median wall s | wall ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for load in loads:
        b, n = tallies[base.label, load.name], tallies[new.label, load.name]
        b50, n50 = statistics.median(b.latencies_s) * 1000, statistics.median(n.latencies_s) * 1000
        bw, nw = statistics.median(b.walls_s), statistics.median(n.walls_s)
        rows.append(
            f"| {load.name} | {len(n.latencies_s)} | {b50:.0f} | {n50:.0f} | {n50 / b50:.2f}× "
            f"| {bw:.2f} | {nw:.2f} | {nw / bw:.2f}× |"
        )
    return "\n".join(rows) + "\n"


DESCRIPTION = (
    "Two versions of the vidserve server, each `python -m server` in its own process on a free port "
    "with the same settings, one checked out from a base git ref into a temporary worktree, the "
    "other this checkout. Round after round the same clients (the serving benchmarks' own) stream "
    "the same frames to one server and then the other over the real REST + websocket API, the "
    "order alternating each round, so both meet the same load on this shared machine; one server "
    "works while the other idles. Latency is send → answer of every frame that runs the engine "
    "(interpolation: every frame after the first; segmentation: every frame), pooled over the "
    "timed rounds; the wall time is one round of all sessions at once. Ratios are this checkout "
    "over the base: below 1 is faster."
)


def section(
    versions_: list[Version],
    loads: list[Workload],
    tallies: dict[tuple[str, str], Tally],
    info: dict[str, Any],
) -> str:
    lines = [
        "## Serving: this checkout against a base version, interleaved",
        "",
        DESCRIPTION,
        "",
        device_line(),
        f"- Threads: torch {torch.get_num_threads()} in each server.",
        f"- Versions: {versions()}.",
        f"- Servers: {info['base']} and {info['new']}; rife-4.0 (released weights) and xmem (hashed "
        "weights with the released shapes) on TorchScript, the servers' default batching; "
        "interpolation sessions at 360p, factor 2, JPEG both ways; segmentation sessions 854×480 "
        f"JPEG with a 2-object mask on the first frame, processing size {SEGMENT_PROCESSING_SIZE}; "
        f"{info['frames']} frames per session, each sent after the previous answer.",
        f"- Command: `{info['command']}` (from the repository root), {info['when']}; whole run "
        f"{info['wall_s']:.0f} s; {info['rounds']} timed rounds after one untimed.",
        f"- Load average (1, 5, 15 min) at start {info['load_start']}, at end {info['load_end']} "
        "(other jobs share these cores; above the core count, expect noise).",
        "",
        results_table(versions_, loads, tallies),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git ref of the version to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one untimed)")
    parser.add_argument("--sessions", default="1,4", help="concurrent sessions per workload")
    parser.add_argument("--frames", type=int, default=4, help="frames each session sends")
    parser.add_argument("--write", action="store_true", help="update the section of --output")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started, load_start = time.perf_counter(), load_average()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    loads = workloads([int(s) for s in args.sessions.split(",")], args.frames)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidserve-compare-")))
        xmem = workdir / "xmem-hashed.pth"
        torch.save(hashed_xmem().state_dict(), xmem)
        weights = {"rife-4.0": fetch("rife-4.0", progress=False), "xmem": xmem}
        base_tree = stack.enter_context(worktree(args.base))
        trees = [
            (f"base {commit_of(REPO_ROOT, args.base)}", base_tree),
            (f"new {commit_of(REPO_ROOT)}", REPO_ROOT),
        ]
        servers = []
        for label, tree in trees:
            (workdir / label).mkdir()
            servers.append(Version(label, tree, stack.enter_context(server(tree, weights, workdir / label))))
        tallies = measure(servers, loads, args.rounds)
    info = {
        "base": f"`{args.base}` ({servers[0].label})",
        "new": f"this checkout ({servers[1].label}, with uncommitted changes if any)",
        "frames": args.frames,
        "rounds": args.rounds,
        "command": shlex.join(
            ["python", "bench/serve_compare.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "when": when,
        "wall_s": time.perf_counter() - started,
        "load_start": load_start,
        "load_end": load_average(),
    }
    body = section(servers, loads, tallies, info)
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
