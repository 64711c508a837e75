"""Serve the clip encoder to N concurrent embed sessions, against the same sessions one at a
time, interleaved in one run.

Starts the real vidserve app (uvicorn in a thread on a free port, as the server tests do)
with a VideoMAE model, opens N embed sessions over the real REST + websocket API and streams
a slow pan over a scikit-image photograph from each (JPEG, encoded before timing; each
session its own offset). Every frame is sent after the previous one's ``frame_done``, as a
live client does. Per round, the N sessions run at once, then the same N one after another
(or the other way round on odd rounds, so drift in the machine's load falls on both); the
ratio of their windows/s isolates what batching slices and windows across sessions gives.
From ``/metrics``: the mean rows per ``embed`` and ``encode`` call.

Weights: without ``--weights`` the deterministic hashed recipe (``tests.hashed_weights``) for
the architecture: the same shapes and FLOPs as the release, so timings are representative,
but the labels are not meaningful.

Run from the repository root: ``python bench/serve_embed.py [--quick] [--write]
[--arch vit-s] [--sessions 4] [--windows 2] [--frames-per-clip 16] [--keep-ratios 1,0.25]
[--rounds 2] [--engine auto] [--max-batch-size 8] [--max-queue-delay-ms 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; server/ and tests/ live at the root
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from report import device_line, split, versions, write_section  # noqa: E402
from serve_interpolation import (  # noqa: E402
    RunInfo,
    add_server_args,
    encode,
    loads,
    parse_with_defaults,
    repository,
    server_settings,
)
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from models.videomae.checkpoint import expected_shapes  # noqa: E402
from models.videomae.config import ARCHS, get_config  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.server.support import RunningServer, running_server  # noqa: E402

SECTION = "serve-embed"
FRAME_HW = (240, 320)  # why: a webcam-like source; each sampled frame is fitted to 224² anyway
SAMPLING_RATE = 1  # why: every frame sent is sampled, so the run times the encoder, not decoding
QUICK = {"sessions": 2, "windows": 1, "frames_per_clip": 4, "keep_ratios": "1,0.25", "rounds": 1}
FULL = {"sessions": 4, "windows": 2, "frames_per_clip": 16, "keep_ratios": "1,0.25", "rounds": 2}


@dataclass
class Served:
    """One way of serving the N sessions' frames (at once, or one at a time)."""

    wall_s: float = 0.0
    windows: int = 0
    frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # send → result, window frames only
    errors: list[str] = field(default_factory=list)

    def add(self, other: Served) -> None:
        self.wall_s += other.wall_s
        self.windows += other.windows
        self.frames += other.frames
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.wall_s if self.wall_s else 0.0


@dataclass
class Case:
    keep_ratio: float
    together: Served = field(default_factory=Served)
    alone: Served = field(default_factory=Served)
    rows_per_call: dict[str, float] = field(default_factory=dict)  # of the concurrent runs


def clips(sessions: int, frames: int) -> list[list[bytes]]:
    """Each session's frames: a slow pan over scikit-image's astronaut (512²), one pixel a
    frame, from its own offset."""
    from skimage import data  # why here: a test-only dependency, needed by this script alone

    image = data.astronaut()
    height, width = FRAME_HW
    if frames + 40 + width > image.shape[1]:
        raise ValueError(f"{frames} frames do not fit the photograph's pan; ask for fewer")
    out = []
    for s in range(sessions):
        top, left = (7 * s) % 40, (11 * s) % 40
        out.append(
            [
                encode(np.ascontiguousarray(image[top : top + height, left + i : left + i + width]), "jpeg")
                for i in range(frames)
            ]
        )
    return out


async def open_session(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/v1/sessions", json=body)
    response.raise_for_status()
    return str(response.json()["stream_url"])


async def stream_clip(url: str, frames: list[bytes]) -> Served:
    served = Served()
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        for data in frames:
            sent = time.perf_counter()
            await ws.send(data)
            await answer(ws, served, sent)
    return served


async def answer(ws: ClientConnection, served: Served, sent: float) -> None:
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "result":
            served.windows += 1
            served.latencies_ms.append((time.perf_counter() - sent) * 1000)
        elif message["type"] == "frame_done":
            served.frames += 1
            return
        elif message["type"] == "error":
            served.errors.append(f"{message['code']}: {message['message']}")
            return


async def serve(
    server: RunningServer, frames: list[list[bytes]], body: dict[str, Any], together: bool
) -> Served:
    """Every clip through its own new session: all at once, or one after another."""
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as http:
        urls = [await open_session(http, body) for _ in frames]
    start = time.perf_counter()
    if together:
        parts = await asyncio.gather(*(stream_clip(u, f) for u, f in zip(urls, frames, strict=True)))
    else:
        parts = [await stream_clip(u, f) for u, f in zip(urls, frames, strict=True)]
    total = Served()
    for part in parts:
        total.add(part)
    total.wall_s = time.perf_counter() - start
    return total


def metric_values(server: RunningServer, model: str) -> dict[str, float]:
    """Engine calls and rows of each part so far."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            part = sample.labels.get("model", "")
            if part.startswith(f"{model}.") and sample.name in (
                "vidserve_inference_exec_count_total",
                "vidserve_inference_count_total",
            ):
                values[f"{sample.name}:{part.split('.', 1)[1]}"] = sample.value
    return values


def rows_per_call(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    out = {}
    for part in ("embed", "encode"):
        calls = after.get(f"vidserve_inference_exec_count_total:{part}", 0) - before.get(
            f"vidserve_inference_exec_count_total:{part}", 0
        )
        rows = after.get(f"vidserve_inference_count_total:{part}", 0) - before.get(
            f"vidserve_inference_count_total:{part}", 0
        )
        out[part] = rows / calls if calls else 0.0
    return out


def measure(args: argparse.Namespace, settings: Settings, model: str) -> list[Case]:
    frames_per_session = args.windows * args.frames_per_clip
    sources = clips(args.sessions, frames_per_session)
    cases = [Case(float(r)) for r in split(args.keep_ratios)]
    with running_server(settings) as server:
        for case in cases:
            body = {
                "task": "embed",
                "frames_per_clip": args.frames_per_clip,
                "sampling_rate": SAMPLING_RATE,
                "keep_ratio": case.keep_ratio,
            }
            asyncio.run(serve(server, [sources[0][: args.frames_per_clip]], body, together=False))  # warm-up
            for round_ in range(args.rounds):
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for together in order:
                    before = metric_values(server, model)
                    served = asyncio.run(serve(server, sources, body, together))
                    if together:
                        case.together.add(served)
                        case.rows_per_call = rows_per_call(before, metric_values(server, model))
                    else:
                        case.alone.add(served)
                    label = "together" if together else "one at a time"
                    print(
                        f"  keep {case.keep_ratio}: {label} {served.windows_per_s:.3f} windows/s",
                        flush=True,
                    )
    return cases


def table(cases: list[Case], sessions: int) -> str:
    rows = [
        f"| keep_ratio | {sessions} at once: windows/s | one at a time: windows/s | ratio | "
        "p50 window latency at once (ms) | one at a time (ms) | rows per embed call | "
        "per encode call | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        together, alone = case.together, case.alone
        ratio = together.windows_per_s / alone.windows_per_s if alone.windows_per_s else 0.0
        rows.append(
            f"| {case.keep_ratio:g} | {together.windows_per_s:.3f} | {alone.windows_per_s:.3f} | "
            f"{ratio:.2f}× | {np.percentile(together.latencies_ms, 50):.0f} | "
            f"{np.percentile(alone.latencies_ms, 50):.0f} | {case.rows_per_call.get('embed', 0):.2f} | "
            f"{case.rows_per_call.get('encode', 0):.2f} | {len(together.errors) + len(alone.errors)} |"
        )
    return "\n".join(rows)


def section(
    settings: Settings, cases: list[Case], args: argparse.Namespace, info: RunInfo, model: str
) -> str:
    command = shlex.join(["python", "bench/serve_embed.py", *info.argv])
    date = datetime.date.today().isoformat()
    tokens = (args.frames_per_clip // 2) * 196
    return "\n\n".join(
        [
            "## Serving the clip encoder over websockets",
            f"The vidserve app (uvicorn, in a thread of the benchmark process) with `{model}`; "
            f"{args.sessions} embed sessions (`frames_per_clip` {args.frames_per_clip}, `sampling_rate` "
            f"{SAMPLING_RATE}, windows side by side: {tokens} tokens each in full) stream "
            f"{args.windows * args.frames_per_clip} JPEG frames of {FRAME_HW[1]}×{FRAME_HW[0]} each, a "
            "slow pan over a scikit-image photograph, every frame sent after the previous one's "
            "`frame_done`. Windows/s counts `result` messages over the wall time from the first send "
            "to the last answer; latency is the window-ending frame's send → its `result`. \"One at a "
            "time\" sends the same sessions' frames one session after another through the same "
            f"server; the two alternate within each of {args.rounds} round(s), after one untimed "
            "window, so the ratio isolates batching. Rows per call come from `/metrics` "
            "(`vidserve_inference_count` over `vidserve_inference_exec_count` of the model's `embed` "
            "and `encode` parts) over the concurrent runs: slices of all sessions share an `embed` "
            "call, windows of one token count an `encode` call.",
            "\n".join(
                [
                    device_line(),
                    f"- Threads: torch {torch.get_num_threads()} (server and clients share one process).",
                    f"- Versions: {versions()}.",
                    f"- Server: engine `{settings.engine}`, max_batch_size {settings.max_batch_size}, "
                    f"max_queue_delay_ms {settings.max_queue_delay_ms:g}.",
                    f"- Weights: the deterministic hashed recipe for `{args.arch}` (the release's shapes "
                    "and FLOPs; the released checkpoints cannot be downloaded here).",
                    f"- Command: `{command}` (run from the repository root), {date}; whole run "
                    f"{info.wall_s:.0f} s.",
                    f"- Load average (1, 5, 15 min) at start {loads(info.load_start)}, at end "
                    f"{loads(info.load_end)} (other jobs share these cores).",
                ]
            ),
            table(cases, args.sessions),
        ]
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"a short run: defaults {QUICK}")
    parser.add_argument("--arch", default="vit-s", choices=list(ARCHS))
    parser.add_argument("--sessions", type=int, default=None, help="concurrent sessions (default 4)")
    parser.add_argument("--windows", type=int, default=None, help="windows each session streams (default 2)")
    parser.add_argument("--frames-per-clip", type=int, default=None, help="sampled frames per window (16)")
    parser.add_argument("--keep-ratios", default=None, help="comma-separated (default 1,0.25)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2)")
    add_server_args(parser)
    args = parse_with_defaults(parser, argv, QUICK, FULL)
    if args.sessions < 1 or args.windows < 1 or args.rounds < 1:
        parser.error("--sessions, --windows and --rounds must be at least 1")
    return args


@contextlib.contextmanager
def hashed_checkpoint(arch: str) -> Iterator[Path]:
    from tests.hashed_weights import hashed_state_dict  # why here: test helpers stay out of import time

    with tempfile.TemporaryDirectory(prefix="vidserve-bench-weights-") as tmp:
        path = Path(tmp) / f"videomae-{arch}-hashed.pth"
        torch.save(hashed_state_dict(expected_shapes(get_config(arch))), path)
        yield path


def main(argv: Sequence[str] | None = None) -> int:
    start, load_start = time.perf_counter(), os.getloadavg()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    model = f"videomae-{args.arch}-k400"
    with hashed_checkpoint(args.arch) as weights, repository(args.model_repository) as repo:
        settings = server_settings(args, weights, repo, model)
        cases = measure(args, settings, model)
    info = RunInfo(argv, time.perf_counter() - start, load_start, os.getloadavg())
    body = section(settings, cases, args, info, model)
    print()
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
        print(f"\nwrote section {SECTION} of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
