"""Serve XMem to N concurrent websocket segmentation sessions and time it end to end.

Starts the real vidserve app (uvicorn in a thread on a free port, as the server tests do) with
an XMem model, opens N segmentation sessions (2 objects, processing size 480) over the real REST
+ websocket API and streams a slow 854×480 pan over a scikit-image photograph (astronaut or
chelsea, alternating by session) from each. The first frame of a session brings an index-PNG
mask with two rectangles (ids 1 and 2); every session sends its next frame once the previous
one's ``result`` came back, as a live client does; the N sessions run concurrently. Frames are
encoded before timing starts; glibc's malloc is tuned at start as ``python -m server`` does. Per
N it reports frames per second, p50/p99 latency per frame (send → that frame's ``result``), the
scheduler's mean frames per batch and each engine's mean rows per call from ``/metrics``, and
the ratio over the same frames sent one session at a time (session 1 fully, then session 2, …)
through the same server in the same run, so the comparison isolates batching.

Weights: without ``--weights`` the deterministic hashed recipe
(``tests.models.xmem_support.hashed_xmem``): the same shapes and FLOPs as XMem.pth, so the
timings are representative, but the masks are not meaningful. ``--weights XMem.pth`` uses the
released checkpoint on a machine that has it.

Run from the repository root: ``python bench/serve_segmentation.py [--quick] [--write]
[--sessions 1,4,8] [--frames 3] [--processing-size 480] [--engine auto] [--providers P,..]
[--fp16] [--max-batch-size 8] [--max-queue-delay-ms 5] [--weights XMem.pth]``. Without
``--write`` the section is only printed. On a GPU host: ``--engine onnx --providers
TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider --fp16``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from report import device_line, split, timed, versions, write_section  # noqa: E402
from serve_interpolation import (  # noqa: E402
    SESSION_OFFSET_XY,
    MetricsSnapshot,
    RunInfo,
    SizeCase,
    Usage,
    add_server_args,
    encode,
    loads,
    malloc_line,
    pan,
    parse_with_defaults,
    repository,
    server_settings,
    stream_all,
    tune_malloc,
)
from websockets.asyncio.client import ClientConnection  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from server.metrics import BATCH_BUCKETS  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.tasks.segmentation.masks import encode_index_png  # noqa: E402
from tests.server.support import RunningServer, running_server  # noqa: E402

MODEL = "xmem"
SECTION = "serve-segmentation"
# the scheduler's batches (frames), then each metered engine's calls (rows), in pipeline order
ENGINE_LABELS = (MODEL, f"{MODEL}.encode_key", f"{MODEL}.segment", f"{MODEL}.encode_value")
SIZE = SizeCase("480p", 480, 854)
OBJECTS = [1, 2]
ANSWER_TIMEOUT_S = 600  # why: 8 sessions × 2 objects at 480p is one ~30 s batch per frame on 2 cores
# what --quick and the full run default to, where the flag is not given
QUICK = {"sessions": "1,2", "frames": 3, "processing_size": 240}
# why 3 frames: at 480p one frame is ~5 s of engine time on 2 busy cores; with 4 frames the
# full run (warm-up, then N = 1, 4, 8 at once and one at a time) takes ~11 min, with 3 ~9 min
FULL = {"sessions": "1,4,8", "frames": 3, "processing_size": 480}


# --- frames ----------------------------------------------------------------------------------


def photographs(margin: int) -> list[np.ndarray]:
    """uint8 H'×W'×3 photographs, astronaut then chelsea, each resized (aspect kept) to cover
    a 480p view with ``margin`` px to spare both ways."""
    from skimage import data  # why here: a test-only dependency, needed by this script alone

    photos = []
    for image in (data.astronaut(), data.chelsea()):
        height, width = image.shape[:2]
        scale = max((SIZE.width + margin) / width, (SIZE.height + margin) / height)
        size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
        photos.append(np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC)))
    return photos


def first_mask() -> np.ndarray:
    """uint8 H×W ids: object 1 a rectangle left of centre, object 2 one right of it."""
    mask = np.zeros((SIZE.height, SIZE.width), np.uint8)
    h, w = SIZE.height, SIZE.width
    mask[h // 4 : 3 * h // 4, w // 8 : 3 * w // 8] = 1
    mask[h // 6 : 5 * h // 6, 5 * w // 9 : 8 * w // 9] = 2
    return mask


@dataclass(frozen=True)
class Clip:
    """What one session sends: frames as encoded bytes, the first one preceded by ``header``."""

    frames: list[bytes]  # JPEG, quality 95, 854×480
    header: str  # JSON {"type": "frame", "mask": {...}, "objects": [1, 2]}


def make_clips(sessions: int, frames: int) -> list[Clip]:
    """One clip per session: its own pan over the astronaut (even) or chelsea (odd)."""
    dx, dy = SESSION_OFFSET_XY
    photos = photographs(sessions * max(dx, dy) + frames * SIZE.pan_step)
    mask = {"format": "png", "data": base64.b64encode(encode_index_png(first_mask())).decode()}
    header = json.dumps({"type": "frame", "mask": mask, "objects": OBJECTS})
    return [
        Clip([encode(f, "jpeg") for f in pan(photos[s % len(photos)], SIZE, s, frames)], header)
        for s in range(sessions)
    ]


# --- /metrics --------------------------------------------------------------------------------


def read_metrics(server: RunningServer) -> dict[str, MetricsSnapshot]:
    """Each label's batching counters, from one read of /metrics."""
    samples: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for s in family.samples:
            samples[(s.name, s.labels.get("model", ""), s.labels.get("le", ""))] = float(s.value)

    def value(name: str, model: str, le: str = "") -> float:
        return samples.get((f"vidserve_{name}", model, le), 0.0)

    return {
        model: MetricsSnapshot(
            value("batch_size_sum", model),
            value("batch_size_count", model),
            value("compute_infer_duration_seconds_sum", model),
            tuple(value("batch_size_bucket", model, f"{float(le)}") for le in BATCH_BUCKETS),
        )
        for model in ENGINE_LABELS
    }


def metrics_since(
    after: dict[str, MetricsSnapshot], before: dict[str, MetricsSnapshot]
) -> dict[str, MetricsSnapshot]:
    return {model: after[model].since(before[model]) for model in ENGINE_LABELS}


def rows_per_call(snapshot: MetricsSnapshot) -> float:
    return snapshot.batch_sum / snapshot.batch_count if snapshot.batch_count else float("nan")


# --- the clients -----------------------------------------------------------------------------


@dataclass
class SessionLog:
    """What one client saw."""

    latencies_s: list[float] = field(default_factory=list)  # every answered frame: send → result
    results: int = 0  # frames answered with a result
    memory_frames: int = 0  # results marked is_memory_frame (the prompt frame, then every mem_every)
    stream_s: float = 0.0  # this session's first send → its last answer
    errors: list[str] = field(default_factory=list)  # error codes, or how the socket closed


async def receive_answer(ws: ClientConnection) -> tuple[dict[str, Any], list[bytes]]:
    """One frame's answer: a ``result`` and its ``len(bytes)`` binary messages, or an ``error``.

    Errors that name no frame (a bad text message) come before the frame's own answer and are
    returned as they are; the caller keeps reading.
    """
    message = json.loads(await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT_S))
    if message["type"] != "result":
        return message, []
    binaries = []
    for size in message["bytes"]:
        data = await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT_S)
        assert isinstance(data, bytes) and len(data) == size, "binary message does not match the result"
        binaries.append(data)
    return message, binaries


async def send_frame(ws: ClientConnection, clip: Clip, index: int, log: SessionLog) -> None:
    """Send frame ``index`` (with the mask header on the first) and wait for its answer."""
    sent = time.perf_counter()
    if index == 0:
        await ws.send(clip.header)
    await ws.send(clip.frames[index])
    while True:
        message, _ = await receive_answer(ws)
        if message["type"] == "result":
            log.results += 1
            log.memory_frames += bool(message["is_memory_frame"])
            log.latencies_s.append(time.perf_counter() - sent)
            return
        log.errors.append(str(message.get("code", message["type"])))
        if message["type"] == "error" and message.get("frame_index") is not None:
            return


async def stream_clip(ws: ClientConnection, clip: Clip, start: asyncio.Event) -> SessionLog:
    """Send each frame once the previous one is answered, timing send → result."""
    log = SessionLog()
    await start.wait()
    started = time.perf_counter()
    for index in range(len(clip.frames)):
        try:
            await send_frame(ws, clip, index, log)
        except ConnectionClosed as exc:
            log.errors.append(f"closed {exc.rcvd.code if exc.rcvd else '?'}")
            break
        except TimeoutError:
            log.errors.append(f"no answer in {ANSWER_TIMEOUT_S} s")
            break
    log.stream_s = time.perf_counter() - started
    return log


async def open_session(http: httpx.AsyncClient, processing_size: int) -> tuple[str, str]:
    """POST /v1/sessions → the session's URL and its stream URL."""
    body = {"task": "segment", "processing_size": processing_size, "max_objects": len(OBJECTS)}
    response = await http.post("/v1/sessions", json={**body, "output_format": "png"})
    response.raise_for_status()
    return str(response.json()["url"]), str(response.json()["stream_url"])


async def drive(
    server: RunningServer, clips: list[Clip], processing_size: int, *, one_at_a_time: bool
) -> tuple[list[SessionLog], float]:
    """One session per clip, all at once or one after the other; deleted afterwards, so a
    long run never meets the server's max_sessions or its memory budget.

    One at a time, the wall time is the sum of the sessions' streams (session setup and
    connecting excluded, as they are from the concurrent wall time)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        sessions = [await open_session(http, processing_size) for _ in clips]
        if one_at_a_time:
            logs = []
            for (_, stream), clip in zip(sessions, clips, strict=True):
                logs += (await stream_all([stream], [clip], stream_clip))[0]
            wall_s = sum(log.stream_s for log in logs)
        else:
            logs, wall_s = await stream_all([stream for _, stream in sessions], clips, stream_clip)
        for url, _ in sessions:
            (await http.delete(url)).raise_for_status()
    return logs, wall_s


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One way of sending N sessions' frames, and what /metrics counted meanwhile."""

    wall_s: float
    logs: list[SessionLog]
    engines: dict[str, MetricsSnapshot]  # by label in ENGINE_LABELS
    usage: Usage | None = None  # what the whole run cost the process, session setup included

    def usage_cells(self) -> str:
        """Load, and minor faults and system ms per frame, of this run."""
        return self.usage.cells(self.frames) if self.usage else "– | – | –"

    @property
    def frames(self) -> int:
        return sum(log.results for log in self.logs)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s else float("nan")

    @property
    def latencies_ms(self) -> list[float]:
        return [s * 1000 for log in self.logs for s in log.latencies_s]

    def percentile_ms(self, q: float) -> float:
        values = self.latencies_ms
        return float(np.percentile(values, q)) if values else float("nan")

    def mean_rows(self, label: str) -> float:
        return rows_per_call(self.engines[label])

    @property
    def engine_ms_per_frame(self) -> float:
        """Time inside the scheduler's engine calls over the frames they ran."""
        batches = self.engines[MODEL]
        return batches.compute_s * 1000 / batches.batch_sum if batches.batch_sum else float("nan")

    @property
    def errors(self) -> list[str]:
        return [e for log in self.logs for e in log.errors]


@dataclass(frozen=True)
class CaseResult:
    """One N: the sessions at once, and the same clips one session at a time."""

    sessions: int
    concurrent: Served
    one_at_a_time: Served

    @property
    def ratio(self) -> float:
        return self.concurrent.frames_per_s / self.one_at_a_time.frames_per_s


def serve(server: RunningServer, clips: list[Clip], processing_size: int, *, one_at_a_time: bool) -> Served:
    before = read_metrics(server)
    (logs, wall_s), usage = Usage.of(
        lambda: asyncio.run(drive(server, clips, processing_size, one_at_a_time=one_at_a_time))
    )
    return Served(wall_s, logs, metrics_since(read_metrics(server), before), usage)


@dataclass
class Run:
    """Everything measured, for the section."""

    cases: list[CaseResult] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)  # /readyz's description of the engine
    warmup_s: float = 0.0
    weights: str = ""  # which weights the server loaded, in words


def warm_up(server: RunningServer, clips: list[Clip], processing_size: int) -> float:
    """One session alone, then every session at once, two frames each (untimed)."""
    # why: each new shape and batch size costs TorchScript (and TensorRT) a first-call
    # specialisation that a long-running server has paid already
    warm = [Clip(clip.frames[:2], clip.header) for clip in clips]

    def both() -> None:
        serve(server, warm[:1], processing_size, one_at_a_time=True)
        serve(server, warm, processing_size, one_at_a_time=False)

    return timed(both)[1]


def measure(args: argparse.Namespace, settings: Settings) -> Run:
    run = Run()
    counts = [int(n) for n in split(args.sessions)]
    clips = make_clips(max(counts), args.frames)
    with running_server(settings) as server:
        run.engine = httpx.get(f"{server.url}/readyz").json()["engines"][0]
        run.warmup_s = warm_up(server, clips, args.processing_size)
        print(f"  warm-up round {run.warmup_s:.0f} s", flush=True)
        for n in counts:
            # why adjacent, concurrent first: the pair shares whatever load other jobs put on
            # the cores at that moment; at N=1 both are the same run, a check on the noise
            concurrent = serve(server, clips[:n], args.processing_size, one_at_a_time=False)
            alone = serve(server, clips[:n], args.processing_size, one_at_a_time=True)
            case = CaseResult(n, concurrent, alone)
            run.cases.append(case)
            print(
                f"  N={n}: {concurrent.frames_per_s:.3f} frames/s at once, {alone.frames_per_s:.3f} "
                f"one at a time ({case.ratio:.2f}×), p50 {concurrent.percentile_ms(50):.0f} ms, "
                f"batch {concurrent.mean_rows(MODEL):.2f}",
                flush=True,
            )
    return run


# --- the section -----------------------------------------------------------------------------


def rows(served: Served, label: str) -> str:
    return f"{served.mean_rows(label):.2f} ({served.engines[label].batch_count:g})"


def problems(served: Served) -> str:
    return ", ".join(served.errors) or "none"


def results_table(run: Run) -> str:
    lines = [
        "| sessions | frames | wall s | frames/s | p50 ms | p99 ms (n) | frames per batch (batches) "
        "| batch sizes: batches | encode_key frames/call (calls) | segment frames/call (calls) "
        "| encode_value frames/call (calls) | engine ms/frame | one at a time: frames/s "
        "| vs one at a time | load (1 min) start→end | minor faults / frame | system ms / frame | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for case in run.cases:
        c, a = case.concurrent, case.one_at_a_time
        lines.append(
            f"| {case.sessions} | {c.frames} | {c.wall_s:.1f} | {c.frames_per_s:.3f} "
            f"| {c.percentile_ms(50):.0f} | {c.percentile_ms(99):.0f} ({len(c.latencies_ms)}) "
            f"| {rows(c, MODEL)} | {c.engines[MODEL].histogram()} "
            f"| {rows(c, ENGINE_LABELS[1])} | {rows(c, ENGINE_LABELS[2])} | {rows(c, ENGINE_LABELS[3])} "
            f"| {c.engine_ms_per_frame:.0f} | {a.frames_per_s:.3f} | {case.ratio:.2f}× | {c.usage_cells()} "
            f"| {problems(c)} |"
        )
    return "\n".join(lines)


def alone_table(run: Run) -> str:
    lines = [
        "| sessions | frames | wall s (sum of streams) | frames/s | p50 ms | p99 ms (n) "
        "| frames per batch (batches) | engine ms/frame | memory frames | load (1 min) start→end "
        "| minor faults / frame | system ms / frame | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for case in run.cases:
        a = case.one_at_a_time
        memory_frames = sum(log.memory_frames for log in a.logs)
        lines.append(
            f"| {case.sessions} | {a.frames} | {a.wall_s:.1f} | {a.frames_per_s:.3f} "
            f"| {a.percentile_ms(50):.0f} | {a.percentile_ms(99):.0f} ({len(a.latencies_ms)}) "
            f"| {rows(a, MODEL)} | {a.engine_ms_per_frame:.0f} | {memory_frames} | {a.usage_cells()} "
            f"| {problems(a)} |"
        )
    return "\n".join(lines)


def server_line(settings: Settings, engine: dict[str, Any], args: argparse.Namespace) -> str:
    return (
        f"- Server: engine `{settings.engine}` → backend `{engine['backend']}`, fp16 {settings.fp16}, "
        f"device {engine['device']}, providers {', '.join(engine['providers'])} "
        f"(fell back: {engine['fell_back']}); max_batch_size {settings.max_batch_size}, "
        f"max_queue_delay_ms {settings.max_queue_delay_ms:g}, max_queue_size {settings.max_queue_size}; "
        f"sessions: processing_size {args.processing_size}, max_objects {len(OBJECTS)}, XMem's "
        "default memory settings (memory frame every 5), output_format png (one index PNG per "
        "frame); client sends JPEG (quality 95)."
    )


def environment(settings: Settings, run: Run, args: argparse.Namespace, info: RunInfo) -> str:
    command = shlex.join(["python", "bench/serve_segmentation.py", *info.argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            device_line(),
            f"- Threads: torch {torch.get_num_threads()} (server and clients share one process).",
            f"- Versions: {versions()}.",
            server_line(settings, run.engine, args),
            f"- Weights: {run.weights}.",
            f"- Command: `{command}` (run from the repository root), {date}; whole run {info.wall_s:.0f} s "
            f"(the untimed warm-up round {run.warmup_s:.0f} s).",
            f"- Load average (1, 5, 15 min) at start {loads(info.load_start)}, at end "
            f"{loads(info.load_end)} (other jobs share these cores; above the core count, expect noise).",
            malloc_line(settings, info.malloc_tuned),
        ]
    )


def section(settings: Settings, run: Run, args: argparse.Namespace, info: RunInfo) -> str:
    return "\n\n".join(
        [
            "## Serving XMem segmentation over websockets",
            f"The vidserve app (uvicorn, in a thread of the benchmark process) with `{MODEL}`; N "
            "segmentation sessions opened with `POST /v1/sessions` and streamed over their websockets "
            f"at once. Each session sends {args.frames} frames of {SIZE.width}×{SIZE.height} (480p) "
            "from its own slow pan over a scikit-image photograph (astronaut for even sessions, "
            "chelsea for odd ones; resized with Pillow, bicubic, aspect kept; the view moves "
            f"{SIZE.pan_step} px per frame, sessions start {SESSION_OFFSET_XY[0]}×{SESSION_OFFSET_XY[1]} "
            "px apart), JPEG-encoded before timing. The first frame of each session is preceded by a "
            "header with an index-PNG mask of two rectangles (objects 1 and 2); every frame is sent "
            "after the previous one's answer. Clips are short (the default 3 frames keeps the whole run "
            "near 10 minutes on 2 cores; `--frames` sets more), so below 6 frames only the prompt frame "
            "writes memory and `encode_value` runs on prompt frames alone. Wall time runs from the "
            "first send to the last "
            "`result`; frames/s counts every answered frame, the prompt frame too (it runs the key "
            "and value encoders but not the decoder). Latency is send → that frame's `result` "
            "message, over every frame; p99 interpolates linearly, so with few samples it is near "
            "the maximum. From the differences of `/metrics` across the run: frames per batch is "
            '`vidserve_batch_size_sum` over `_count` for model="xmem" (the scheduler\'s batches, one '
            "frame per session), batch sizes its buckets (exact up to 4, then 5–6, 7–8, …), and the "
            'mean leading batch dimension per call of models "xmem.encode_key", "xmem.segment" and '
            '"xmem.encode_value", which the server meters as `inputs[0].shape[0]`: the image or `f16`, so '
            "frames, not the 2 object rows per frame (`vidserve_batch_size` is documented as rows "
            'per engine call); engine ms/frame is model "xmem"\'s '
            "`vidserve_compute_infer_duration_seconds_sum` over its frames (time inside batches; "
            'queueing, decoding, resizing and PNG encoding excluded). "vs one at a time" is frames/s '
            "over the frames/s of the same clips sent through the same server one session at a time "
            "(session 1 fully, then session 2, …; wall time the sum of the streams), run right after "
            "the concurrent run of that N, so it isolates batching (issue 16's goal: at least 1.0× at 4 "
            "and 8 sessions). Beside every row: the 1-minute load average at the run's start and end, and "
            "the process's minor page faults and system CPU time over the run from "
            "`getrusage(RUSAGE_SELF)` (server and clients, session setup included), per frame. Before "
            "the timed runs, one "
            "untimed round (one session alone, then every session at once, two frames each) warms "
            "the engines' shapes.",
            environment(settings, run, args, info),
            results_table(run),
            "The same clips one session at a time (the denominator of the ratio):",
            alone_table(run),
        ]
    )


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"a short run: defaults {QUICK}")
    parser.add_argument("--sessions", default=None, help="concurrent session counts (default 1,4,8)")
    parser.add_argument("--frames", type=int, default=None, help="frames each session sends (default 3)")
    parser.add_argument(
        "--processing-size", type=int, default=None, help="sessions' processing_size (default 480)"
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="XMem.pth (default: the hashed-weight recipe)"
    )
    add_server_args(parser)
    args = parse_with_defaults(parser, argv, QUICK, FULL)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not all(n.isdigit() and int(n) >= 1 for n in split(args.sessions)):
        parser.error(f"--sessions must be positive integers, got {args.sessions!r}")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} is not a file")


@contextlib.contextmanager
def checkpoint(path: Path | None) -> Iterator[tuple[Path, str]]:
    """The given checkpoint, or the hashed recipe saved to a temporary file; and in words."""
    if path is not None:
        yield path, f"`{path.name}`, given with `--weights`"
        return
    from tests.models.xmem_support import hashed_xmem  # why here: pulls in pytest

    with tempfile.TemporaryDirectory(prefix="vidserve-bench-weights-") as tmp:
        saved = Path(tmp) / "xmem-hashed.pth"
        torch.save(hashed_xmem().state_dict(), saved)
        yield (
            saved,
            (
                "the deterministic hashed-weight recipe (`tests.models.xmem_support.hashed_xmem`), "
                "because the released `XMem.pth` cannot be downloaded from this machine: the same "
                "shapes and FLOPs as XMem.pth, so the timings are representative, but the masks are "
                "not meaningful (`--weights XMem.pth` uses the released checkpoint)"
            ),
        )


def main(argv: Sequence[str] | None = None) -> int:
    start, load_start = time.perf_counter(), os.getloadavg()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # why before the checkpoint: making the hashed weights is this run's first large allocation;
    # the malloc settings come from the environment alone, as the server's do
    tuned = tune_malloc(Settings())
    with checkpoint(args.weights) as (weights, described), repository(args.model_repository) as repo:
        settings = server_settings(args, weights, repo, MODEL)
        run = measure(args, settings)
        run.weights = described
    info = RunInfo(argv, time.perf_counter() - start, load_start, os.getloadavg(), tuned)
    body = section(settings, run, args, info)
    print()
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
        print(f"\nwrote section {SECTION} of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
