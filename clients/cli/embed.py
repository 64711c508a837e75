"""``python -m clients embed``: a video through a server's VideoMAE V2 clip encoder, as a clip
job: each window's embedding and top Kinetics-400 labels into a JSON file, and each window's
top label on stdout."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clients.cli.common import CliError, add_api_key, connect, progress, wait_ready
from clients.python import Client, ClipSegment, Job
from models.video import probe

OUT_SUFFIX = ".embed.json"
POLL_S = 0.25  # why: often enough for a smooth bar, rare enough to cost the server nothing


def add_parser(sub: argparse._SubParsersAction, server: str) -> None:
    p = sub.add_parser(
        "embed",
        help="embed and label a video's windows with VideoMAE V2",
        description="Cut VIDEO into windows; write each one's embedding and top Kinetics-400 labels "
        "to a JSON file, and print each one's top label.",
    )
    p.add_argument("video", type=Path, help="input video file")
    p.add_argument(
        "--frames-per-clip",
        type=int,
        default=16,
        metavar="N",
        help="sampled frames per window, even (default 16)",
    )
    p.add_argument(
        "--sampling-rate", type=int, default=4, metavar="N", help="every Nth frame is sampled (default 4)"
    )
    p.add_argument(
        "--stride",
        type=int,
        metavar="FRAMES",
        help="frames between window starts, a multiple of 2 × the sampling rate "
        "(default: frames per clip × sampling rate, windows side by side)",
    )
    p.add_argument(
        "--keep-ratio",
        type=float,
        default=1.0,
        metavar="R",
        help="share of each window's tokens that run, in (0, 1] (default 1: all)",
    )
    p.add_argument(
        "--drop", choices=("tube", "static"), default="tube", help="tokens dropped when --keep-ratio < 1"
    )
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per window (default 5)")
    p.add_argument("--model", help="a VideoMAE model the server serves (default: its first)")
    p.add_argument("--out", type=Path, help=f"output JSON (default: VIDEO with {OUT_SUFFIX})")
    p.add_argument("--server", default=server, help=f"server URL (default $VIDSERVE_URL or {server})")
    add_api_key(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = args.out or args.video.with_suffix(OUT_SUFFIX)
    if out.suffix.lower() != ".json":
        raise CliError(f"--out {out}: give a file name ending in .json")
    info = probe(args.video)  # why first: a missing or unreadable file fails here in one line
    with connect(args.server, args.api_key) as client:
        wait_ready(client, args.server)
        job = client.submit_job(args.video, "embed", **window_options(args))
        try:
            with progress(job.frames_total or info.frames, desc="embed", quiet=args.quiet) as bar:
                job = client.wait_job(job.id, poll_s=POLL_S, on_progress=lambda j: _advance(bar, j))
                _advance(bar, job)
            answer = client.embed_job_result(job.id)
        finally:
            forget_quietly(client, job)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    write_json(out, {"video": args.video.name, **answer.raw})
    for segment in answer.segments:
        print(describe(segment))
    if not args.quiet:
        print(f"wrote {len(answer.segments)} segments to {out}", file=sys.stderr)
    return 0


def window_options(args: argparse.Namespace) -> dict[str, Any]:
    """The job's window fields; range checks are the server's, so they are never out of step."""
    return {
        "model": args.model,
        "frames_per_clip": args.frames_per_clip,
        "sampling_rate": args.sampling_rate,
        "stride": args.stride,
        "keep_ratio": args.keep_ratio,
        "drop": args.drop,
        "top_k": args.top_k,
    }


def _advance(bar: tqdm, job: Job) -> None:
    """The bar at the job's progress (the total once the server has counted the frames)."""
    if job.frames_total and bar.total != job.frames_total:
        bar.total = job.frames_total
    bar.update(job.frames_done - bar.n)


def forget_quietly(client: Client, job: Job) -> None:
    """Cancel the job if it still runs (Ctrl-C), or forget its result once fetched; a failure
    here must not hide the error that got us here."""
    with contextlib.suppress(Exception):
        client.cancel_job(job.id)


def write_json(out: Path, document: dict[str, Any]) -> None:
    """``out`` appears whole or not at all."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(json.dumps(document))
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def describe(segment: ClipSegment) -> str:
    """One line per window: its frames, its times when known, and its top label."""
    times = ""
    if segment.pts is not None and segment.end_pts is not None:
        times = f" ({segment.pts:.2f}-{segment.end_pts:.2f} s)"
    top = segment.top_label
    label = f"{top.label} ({top.score:.3f})" if top else "no label"
    return f"window {segment.window}: frames {segment.start_frame}-{segment.end_frame}{times}: {label}"
