"""A live interpolation stream's latency, alone and beside clip jobs on the same engine.

Starts the real vidserve app (RIFE v4.0, released weights) as the serving benchmarks do.
First one live websocket session (factor 2) streams a slow pan, each frame sent once the
previous one's ``frame_done`` came back, and its send → ``frame_done`` latency is timed.
Then K interpolation jobs (factor 2) of a longer H.264 clip of the same size are submitted
through ``POST /v1/jobs``; once they are running, the same live stream runs again, and the
jobs' own progress (input frames per second) is read from ``GET /v1/jobs/{id}``. Job rows
run at batch priority: they never share a batch with live rows and never lead one while a
live row waits, but a job batch already on the engine is not interrupted.

Run from the repository root: ``python bench/serve_jobs.py [--quick] [--write] [--size 360p]
[--jobs 2] [--frames 8] [--engine auto] [--max-batch-size N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # why: run as a script, only bench/ is on sys.path

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from report import device_line, versions, write_section  # noqa: E402
from serve_interpolation import (  # noqa: E402
    MODEL,
    SIZES,
    SessionLog,
    SizeCase,
    add_server_args,
    decode,
    drive,
    make_clips,
    parse_with_defaults,
    repository,
    server_settings,
)

from models.video import VideoWriter  # noqa: E402
from models.weights.fetch import fetch  # noqa: E402
from tests.server.support import RunningServer, running_server  # noqa: E402

SECTION = "serve-jobs"
QUICK = {"size": "360p", "jobs": 1, "frames": 5, "job_frames": 24}
FULL = {"size": "360p", "jobs": 2, "frames": 10, "job_frames": 60}
JOB_FPS = Fraction(30)


@dataclass(frozen=True)
class Phase:
    """One live stream's run: alone, or beside running jobs."""

    name: str
    log: SessionLog
    job_frames_per_s: float | None  # the jobs' input frames per second during it, all jobs

    def percentile_ms(self, q: float) -> float:
        values = [s * 1000 for s in self.log.latencies_s]
        return float(np.percentile(values, q)) if values else float("nan")


def write_job_clip(path: Path, size: SizeCase, frames: int) -> None:
    """An H.264 clip of the benchmark's pan, for the jobs to interpolate."""
    clip = make_clips(size, 1, frames, "png")[0]
    with VideoWriter(path, width=size.width, height=size.height, fps=JOB_FPS) as writer:
        for data in clip:
            writer.write(decode(data))


def live_phase(server: RunningServer, name: str, clip: list[bytes], job_ids: list[str]) -> Phase:
    before, started = job_progress(server, job_ids), time.perf_counter()
    logs, _ = asyncio.run(drive(server, [clip], "jpeg"))
    seconds = time.perf_counter() - started
    done = job_progress(server, job_ids) - before
    return Phase(name, logs[0], done / seconds if job_ids else None)


def job_progress(server: RunningServer, job_ids: list[str]) -> int:
    return sum(httpx.get(f"{server.url}/v1/jobs/{j}").json()["progress"]["frames_done"] for j in job_ids)


def submit_jobs(server: RunningServer, clip: Path, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        files = {"video": (clip.name, clip.read_bytes(), "video/mp4")}
        response = httpx.post(
            f"{server.url}/v1/jobs", files=files, data={"task": "interpolate", "factor": "2"}
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    deadline = time.monotonic() + 120
    while job_progress(server, ids) < count and time.monotonic() < deadline:
        time.sleep(0.05)  # why: measure once every job has frames on the engine
    return ids


def measure(args: argparse.Namespace, server: RunningServer, workdir: Path) -> list[Phase]:
    size = SIZES[args.size]
    clip = make_clips(size, 1, args.frames, "jpeg")[0]
    job_clip = workdir / "job.mp4"
    write_job_clip(job_clip, size, args.job_frames)
    live_phase(server, "warm-up", clip[:2], [])
    phases = [live_phase(server, "live stream alone", clip, [])]
    job_ids = submit_jobs(server, job_clip, args.jobs)
    phases.append(live_phase(server, f"beside {args.jobs} running job(s)", clip, job_ids))
    states = [httpx.get(f"{server.url}/v1/jobs/{j}").json()["state"] for j in job_ids]
    if "running" not in states:
        print(f"warning: the jobs finished during the live stream ({states}); use more --job-frames")
    for job_id in job_ids:
        httpx.delete(f"{server.url}/v1/jobs/{job_id}")
    return phases


def section(args: argparse.Namespace, argv: Sequence[str], phases: list[Phase], server: RunningServer) -> str:
    rows = [
        "| live stream | frames | p50 ms | p95 ms | max ms | errors | jobs' input frames/s meanwhile |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in phases:
        latencies = [s * 1000 for s in phase.log.latencies_s]
        jobs = "–" if phase.job_frames_per_s is None else f"{phase.job_frames_per_s:.2f}"
        p50, p95 = phase.percentile_ms(50), phase.percentile_ms(95)
        worst, errors = max(latencies, default=float("nan")), len(phase.log.errors)
        rows.append(
            f"| {phase.name} | {len(latencies)} | {p50:.0f} | {p95:.0f} | {worst:.0f} | {errors} | {jobs} |"
        )
    settings = server.state.settings
    return "\n".join(
        [
            "## Serving: live latency beside clip jobs",
            "",
            device_line(),
            f"- Versions: {versions()}.",
            f"- Command: `python bench/serve_jobs.py {' '.join(argv)}`.",
            f"- Server: {MODEL}, engine {settings.engine}, max_batch_size {settings.max_batch_size}, "
            f"max_queue_delay_ms {settings.max_queue_delay_ms:g}; {args.size}, factor 2 live and in "
            f"the jobs; {args.jobs} job(s) of {args.job_frames} frames.",
            "",
            *rows,
            "",
            "Job rows run at batch priority: a live row leads the next batch whenever one waits,",
            "but a job batch already on the engine finishes first, so a live frame can wait up to",
            "one job batch. On a CPU host the jobs' decoding, padding and H.264 encoding also take",
            "cores from the engine; on a GPU host only the engine is shared.",
            "",
        ]
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"a short run: defaults {QUICK}")
    parser.add_argument("--size", default=None, choices=list(SIZES), help="frame size (default 360p)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs running beside the stream (default 2)")
    parser.add_argument("--frames", type=int, default=None, help="frames the live stream sends (default 10)")
    parser.add_argument("--job-frames", type=int, default=None, help="frames of each job's clip (default 60)")
    add_server_args(parser)
    return parse_with_defaults(parser, argv, QUICK, FULL)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    weights = fetch(MODEL, progress=False)
    with repository(args.model_repository) as repo, tempfile.TemporaryDirectory() as workdir:
        args.providers = args.providers or None
        settings = server_settings(args, weights, repo).model_copy(update={"max_jobs": args.jobs + 1})
        with running_server(settings) as server:
            phases = measure(args, server, Path(workdir))
            body = section(args, argv, phases, server)
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
        print(f"wrote section {SECTION} of {args.output}", flush=True)
    print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
