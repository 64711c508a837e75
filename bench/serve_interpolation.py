"""Serve RIFE v4.0 to N concurrent websocket sessions and time it end to end.

Starts the real vidserve app (uvicorn in a thread on a free port, as the server tests do)
with the released v4.0 weights, opens N interpolation sessions (factor 2) over the real
REST + websocket API and streams a slow pan over scikit-image's astronaut photograph from
each, every session sending its next frame once the previous one's ``frame_done`` came
back, as a live client does; the N sessions run concurrently. Frames are encoded before
timing starts. Per size × N it reports in-between and input frames per second, p50/p99
latency per input frame (send → ``frame_done``), the mean engine batch from ``/metrics``,
the served throughput over the same pairs run one at a time through the eager
reference pipeline (``Interpolator.interpolate(frame0, frame1, [0.5])``), timed in the
same run, and over the same clips streamed through the same server one session after
another (``--no-one-at-a-time`` skips that). glibc's malloc is tuned at start as
``python -m server`` does; every row records the load average and the process's minor page
faults and system CPU time (``getrusage``) over its run.

Run from the repository root: ``python bench/serve_interpolation.py [--quick] [--write] [--sizes
720p,1080p] [--sessions 1,4,8] [--frames 4] [--engine auto] [--providers P,..] [--fp16]
[--max-batch-size 8] [--max-queue-delay-ms 5]``; the batching goal's run (1, 4 and 8 sessions at
720p, about 5 minutes on 2 cores): ``--sizes 720p --sessions 1,4,8 --frames 6``. Without
``--write`` the section is only printed. On a GPU host: ``--engine onnx --providers
TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider --fp16``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import io
import itertools
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; server/ and tests/ live at the root
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from report import device_line, split, timed, versions, write_section  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from models.rife.inference import Interpolator  # noqa: E402
from models.rife.loading import make_runner  # noqa: E402
from models.rife.spec import get_spec  # noqa: E402
from models.weights.fetch import fetch  # noqa: E402
from server.allocator import tune, tuning_of  # noqa: E402
from server.engines.loading import torch_device  # noqa: E402
from server.metrics import BATCH_BUCKETS  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.server.support import RunningServer, receive_frame_answer, running_server  # noqa: E402

MODEL = "rife-4.0"
C = TypeVar("C")  # what one session streams
T = TypeVar("T")
L = TypeVar("L")  # what one session's stream reports
SECTION = "serve-interpolation"
FORMATS = ("jpeg", "png")
ENGINES = ("auto", "eager", "torchscript", "onnx")
# why these offsets: each session pans its own window, so no two sessions send equal pairs
SESSION_OFFSET_XY = (16, 8)
# what --quick and the full run default to, where the flag is not given
QUICK = {"sizes": "360p", "sessions": "1,4", "frames": 3, "reference_pairs": 2}
FULL = {"sizes": "720p,1080p", "sessions": "1,4,8", "frames": 4, "reference_pairs": 3}


@dataclass(frozen=True)
class SizeCase:
    name: str  # "720p"
    height: int
    width: int

    @property
    def pan_step(self) -> int:
        """Pixels the view moves per frame: 4 at 720p, 6 at 1080p, a slow pan at 30 fps."""
        return max(2, self.width // 320)


SIZES: dict[str, SizeCase] = {
    "360p": SizeCase("360p", 360, 640),
    "720p": SizeCase("720p", 720, 1280),
    "1080p": SizeCase("1080p", 1080, 1920),
}


@dataclass
class SessionLog:
    """What one client saw."""

    latencies_s: list[float] = field(default_factory=list)  # frames after the first: send → frame_done
    inputs_done: int = 0  # frames answered with frame_done
    results: int = 0  # in-between frames received
    scene_changes: int = 0  # results the server marked as a cut (a slow pan should have none)
    errors: list[str] = field(default_factory=list)  # error codes, or how the socket closed


@dataclass(frozen=True)
class MetricsSnapshot:
    """The model's batching counters from /metrics."""

    batch_sum: float  # rows over all engine calls
    batch_count: float  # engine calls
    compute_s: float  # seconds inside engine calls, queueing excluded
    buckets: tuple[float, ...]  # cumulative engine calls with at most BATCH_BUCKETS[i] rows

    @classmethod
    def read(cls, server: RunningServer) -> MetricsSnapshot:
        def bucket(le: int) -> float:
            return server.metric("vidserve_batch_size_bucket", model=MODEL, le=f"{float(le)}")

        return cls(
            server.metric("vidserve_batch_size_sum", model=MODEL),
            server.metric("vidserve_batch_size_count", model=MODEL),
            server.metric("vidserve_compute_infer_duration_seconds_sum", model=MODEL),
            tuple(bucket(le) for le in BATCH_BUCKETS),
        )

    def since(self, before: MetricsSnapshot) -> MetricsSnapshot:
        return MetricsSnapshot(
            self.batch_sum - before.batch_sum,
            self.batch_count - before.batch_count,
            self.compute_s - before.compute_s,
            tuple(a - b for a, b in zip(self.buckets, before.buckets, strict=True)),
        )

    def histogram(self) -> str:
        """Engine calls per batch-size bucket, e.g. "1: 3, 7–8: 3"; exact up to 4 rows."""
        parts, below, low = [], 0.0, 1
        for le, cumulative in zip(BATCH_BUCKETS, self.buckets, strict=True):
            if cumulative > below:
                rows = f"{low}" if low == le else f"{low}–{le}"
                parts.append(f"{rows}: {cumulative - below:g}")
            below, low = cumulative, le + 1
        return ", ".join(parts)


@dataclass(frozen=True)
class Reference:
    """The same kind of pairs, one at a time, through the eager pipeline."""

    size: SizeCase
    # one interpolate(frame0, frame1, [0.5]) call per pair, before and after the served runs
    before_s: list[float]
    after_s: list[float]

    @property
    def times_s(self) -> list[float]:
        return self.before_s + self.after_s

    @property
    def frames_per_s(self) -> float:
        return len(self.times_s) / sum(self.times_s)


@dataclass(frozen=True)
class CaseResult:
    """One size × N measurement."""

    size: SizeCase
    sessions: int
    wall_s: float  # first send → last frame_done, all sessions (one at a time: the sum of the streams)
    logs: list[SessionLog]
    engine: MetricsSnapshot  # what /metrics counted during the run
    usage: Usage | None = None  # what the whole run cost the process, session setup included
    alone: CaseResult | None = None  # the same clips through the same server, one session after another

    @property
    def frames_per_s(self) -> float:
        """In-between frames per second."""
        return self.results / self.wall_s if self.wall_s else float("nan")

    @property
    def vs_alone(self) -> float:
        """Throughput over the same streams one after another's (above 1: batching pays)."""
        if self.alone is None or not self.alone.frames_per_s:
            return float("nan")
        return self.frames_per_s / self.alone.frames_per_s

    @property
    def latencies_ms(self) -> list[float]:
        return [s * 1000 for log in self.logs for s in log.latencies_s]

    @property
    def results(self) -> int:
        return sum(log.results for log in self.logs)

    @property
    def inputs(self) -> int:
        return sum(log.inputs_done for log in self.logs)

    @property
    def mean_batch(self) -> float:
        return self.engine.batch_sum / self.engine.batch_count if self.engine.batch_count else float("nan")

    @property
    def engine_ms_per_row(self) -> float:
        return self.engine.compute_s * 1000 / self.engine.batch_sum if self.engine.batch_sum else float("nan")

    def percentile_ms(self, q: float) -> float:
        values = self.latencies_ms
        return float(np.percentile(values, q)) if values else float("nan")


# --- what a run cost the process ---------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Wall time, and ``getrusage(RUSAGE_SELF)`` deltas over one run or call: minor page faults
    and system CPU time of the whole process (every thread: the server's, the clients' and any
    reference's), with the 1-minute load average before and after."""

    wall_s: float
    minor_faults: int
    sys_s: float
    load_start: float
    load_end: float

    @staticmethod
    def of(fn: Callable[[], T]) -> tuple[T, Usage]:
        """``fn()`` and what it cost."""
        load_start, before = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        result = fn()
        wall_s = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        usage = Usage(
            wall_s,
            after.ru_minflt - before.ru_minflt,
            after.ru_stime - before.ru_stime,
            load_start,
            os.getloadavg()[0],
        )
        return result, usage

    def cells(self, per: int) -> str:
        """Markdown cells: load start→end, then minor faults and system ms per ``per`` units."""
        per = max(per, 1)
        return (
            f"{self.load_start:.2f}→{self.load_end:.2f} | {self.minor_faults / per:.0f} "
            f"| {self.sys_s * 1000 / per:.0f}"
        )


def tune_malloc(settings: Settings) -> bool:
    """glibc's malloc tuning, as ``python -m server`` applies it at start (server/__main__.py),
    before any large allocation; False where it did not apply (not glibc, or turned off)."""
    return tune(tuning_of(settings))


# --- frames ----------------------------------------------------------------------------------


def photograph(size: SizeCase, margin: int) -> np.ndarray:
    """uint8 S×S×3: the astronaut, resized so every session's pan fits with ``margin`` to spare."""
    from skimage import data  # why here: a test-only dependency, needed by this script alone

    side = max(size.width, size.height) + margin
    return np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BICUBIC))


def pan(photo: np.ndarray, size: SizeCase, session: int, count: int) -> Iterator[np.ndarray]:
    """``count`` uint8 H×W×3 frames of session ``session``'s pan: consecutive frames overlap."""
    dx, dy = SESSION_OFFSET_XY
    top, left = session * dy, session * dx
    for i in range(count):
        x = left + i * size.pan_step
        yield np.ascontiguousarray(photo[top : top + size.height, x : x + size.width])


def encode(frame: np.ndarray, fmt: str) -> bytes:
    """uint8 H×W×3 → what a client would send: JPEG at quality 95, or PNG at Pillow's default."""
    out = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(frame).save(out, "JPEG", quality=95)
    else:
        Image.fromarray(frame).save(out, "PNG")
    return out.getvalue()


def make_clips(size: SizeCase, sessions: int, frames: int, fmt: str) -> list[list[bytes]]:
    """Encoded frames, one list per session."""
    dx, dy = SESSION_OFFSET_XY
    margin = sessions * max(dx, dy) + frames * size.pan_step
    photo = photograph(size, margin)
    return [[encode(f, fmt) for f in pan(photo, size, s, frames)] for s in range(sessions)]


def decode(data: bytes) -> np.ndarray:
    """Encoded bytes → uint8 H×W×3, writable (torch warns on read-only arrays)."""
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


# --- the eager reference ---------------------------------------------------------------------


def load_reference(weights: Path, device: torch.device) -> Interpolator:
    """``load_interpolator(MODEL, engine="eager")``'s steps, on the server's device, so a GPU
    host compares like with like (load_interpolator always builds on the CPU)."""
    return Interpolator(get_spec(MODEL), make_runner(MODEL, weights, "eager", device=device))


def reference_pairs(clips: list[list[bytes]], count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` consecutive pairs the sessions send, decoded as the server decodes them."""
    pairs = [(a, b) for clip in clips for a, b in itertools.pairwise(clip)]
    return [(decode(a), decode(b)) for a, b in pairs[:count]]


def time_pairs(interpolator: Interpolator, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Seconds of each ``interpolate(frame0, frame1, [0.5])``, one pair per call."""
    times = []
    for frame0, frame1 in pairs:
        started = time.perf_counter()
        interpolator.interpolate(frame0, frame1, [0.5])
        times.append(time.perf_counter() - started)
    return times


# --- the clients -----------------------------------------------------------------------------


async def open_session(http: httpx.AsyncClient, output_format: str) -> tuple[str, str]:
    """POST /v1/sessions → the session's URL and its stream URL."""
    body = {"task": "interpolate", "factor": 2, "output_format": output_format}
    response = await http.post("/v1/sessions", json=body)
    response.raise_for_status()
    return str(response.json()["url"]), str(response.json()["stream_url"])


async def stream_clip(ws: ClientConnection, clip: list[bytes], start: asyncio.Event) -> SessionLog:
    """Send each frame once the previous one is done, timing send → frame_done."""
    log = SessionLog()
    await start.wait()
    for index, data in enumerate(clip):
        sent = time.perf_counter()
        try:
            await ws.send(data)
            results, final = await receive_frame_answer(ws)
        except ConnectionClosed as exc:
            log.errors.append(f"closed {exc.rcvd.code if exc.rcvd else '?'}")
            return log
        except TimeoutError:  # receive_frame_answer waits 120 s per message
            log.errors.append("no answer in 120 s")
            return log
        record(log, index, results, final, time.perf_counter() - sent)
    return log


def record(
    log: SessionLog,
    index: int,
    results: list[tuple[dict[str, Any], bytes]],
    final: dict[str, Any],
    seconds: float,
) -> None:
    if final["type"] == "error":
        log.errors.append(str(final["code"]))
        return
    log.inputs_done += 1
    log.results += len(results)
    log.scene_changes += sum(bool(header["scene_change"]) for header, _ in results)
    if index > 0:  # why: the first frame only primes the session; no pair runs for it
        log.latencies_s.append(seconds)


async def drive(
    server: RunningServer, clips: list[list[bytes]], output_format: str, *, one_at_a_time: bool = False
) -> tuple[list[SessionLog], float]:
    """One session per clip, streamed at once, or one after the other (the wall time then the
    sum of the streams); the sessions are deleted afterwards, so a long run never meets the
    server's max_sessions."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        sessions = [await open_session(http, output_format) for _ in clips]
        if one_at_a_time:
            logs: list[SessionLog] = []
            wall_s = 0.0
            for (_, stream), clip in zip(sessions, clips, strict=True):
                alone, seconds = await stream_all([stream], [clip], stream_clip)
                logs, wall_s = logs + alone, wall_s + seconds
        else:
            logs, wall_s = await stream_all([stream for _, stream in sessions], clips, stream_clip)
        for url, _ in sessions:
            (await http.delete(url)).raise_for_status()
    return logs, wall_s


async def stream_all(
    urls: list[str],
    clips: list[C],
    stream: Callable[[ClientConnection, C, asyncio.Event], Coroutine[Any, Any, L]],
) -> tuple[list[L], float]:
    """Connect every socket first, then start ``stream`` on all of them at once; the wall
    time runs from that start to the last stream's end (both serving benchmarks use it)."""
    async with contextlib.AsyncExitStack() as stack:
        # why max_size None: a 1080p result can exceed the client's 1 MiB default
        sockets = [await stack.enter_async_context(connect(url, max_size=None)) for url in urls]
        for ws in sockets:
            await ws.recv()  # the {"type": "session"} greeting
        start = asyncio.Event()
        tasks = [
            asyncio.create_task(stream(ws, clip, start)) for ws, clip in zip(sockets, clips, strict=True)
        ]
        started = time.perf_counter()
        start.set()
        logs = await asyncio.gather(*tasks)
        return list(logs), time.perf_counter() - started


def run_case(
    server: RunningServer,
    size: SizeCase,
    clips: list[list[bytes]],
    output_format: str,
    *,
    one_at_a_time: bool = False,
) -> CaseResult:
    before = MetricsSnapshot.read(server)
    (logs, wall_s), usage = Usage.of(
        lambda: asyncio.run(drive(server, clips, output_format, one_at_a_time=one_at_a_time))
    )
    engine = MetricsSnapshot.read(server).since(before)
    return CaseResult(size, len(clips), wall_s, logs, engine, usage)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything measured, for the section."""

    cases: list[CaseResult] = field(default_factory=list)
    references: dict[str, Reference] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # /readyz's description of the engine
    warmup_s: dict[str, float] = field(default_factory=dict)


def measure_size(
    server: RunningServer, reference: Interpolator, size: SizeCase, args: argparse.Namespace, run: Run
) -> None:
    """The eager reference, the served runs, and the eager reference again, at one size."""
    counts = [int(n) for n in split(args.sessions)]
    clips = make_clips(size, max(counts), args.frames, args.input_format)
    pairs = reference_pairs(clips, args.reference_pairs + 1)
    reference.interpolate(*pairs[0], [0.5])  # untimed: the first call's allocations
    # why before and after: other jobs' load drifts; timing both sides brackets the served runs
    before = time_pairs(reference, pairs[1:])
    serve_size(server, size, clips, counts, args, run)
    run.references[size.name] = Reference(size, before, time_pairs(reference, pairs[1:]))
    print(f"  {size.name} eager: {1000 / run.references[size.name].frames_per_s:.0f} ms/pair", flush=True)


def serve_size(
    server: RunningServer,
    size: SizeCase,
    clips: list[list[bytes]],
    counts: list[int],
    args: argparse.Namespace,
    run: Run,
) -> None:
    """A warm-up round, then each N in ``counts``."""
    # why a warm-up round with every session: each new shape and batch size costs TorchScript
    # (and TensorRT) a first-call specialisation that a long-running server has paid already
    warm = [clip[:2] for clip in clips]
    run.warmup_s[size.name] = timed(lambda: asyncio.run(drive(server, warm, args.output_format)))[1]
    for n in counts:
        # why adjacent, at once first: the pair shares whatever load other jobs put on the
        # cores at that moment; at N=1 both are the same run, a check on the noise
        case = run_case(server, size, clips[:n], args.output_format)
        if args.one_at_a_time:
            alone = run_case(server, size, clips[:n], args.output_format, one_at_a_time=True)
            case = dataclasses.replace(case, alone=alone)
        run.cases.append(case)
        print(
            f"  {size.name} N={n}: {case.frames_per_s:.2f} in-between/s, "
            f"p50 {case.percentile_ms(50):.0f} ms, batch {case.mean_batch:.2f}"
            + (
                f"; one after another {case.alone.frames_per_s:.2f} ({case.vs_alone:.2f}×)"
                if case.alone
                else ""
            ),
            flush=True,
        )


def server_settings(
    args: argparse.Namespace, weights: Path, repository: Path, model: str = MODEL
) -> Settings:
    """The server both serving benchmarks start: ``model`` alone, with the flags' settings."""
    values: dict[str, Any] = {
        "models": [model],
        "weights": {model: weights},
        "model_repository": repository,
        "engine": args.engine,
        "providers": split(args.providers) if args.providers else None,
        "fp16": args.fp16,
        "log_level": "warning",
    }
    if args.max_batch_size is not None:
        values["max_batch_size"] = args.max_batch_size
    if args.max_queue_delay_ms is not None:
        values["max_queue_delay_ms"] = args.max_queue_delay_ms
    return Settings(**values)


def measure(args: argparse.Namespace, settings: Settings, weights: Path) -> Run:
    run = Run()
    reference = load_reference(weights, torch_device())
    with running_server(settings) as server:
        run.engine = httpx.get(f"{server.url}/readyz").json()["engines"][0]
        for name in split(args.sizes):
            measure_size(server, reference, SIZES[name], args, run)
    return run


# --- the section -----------------------------------------------------------------------------


def ratio(case: CaseResult, run: Run) -> str:
    reference = run.references[case.size.name]
    return f"{case.results / case.wall_s / reference.frames_per_s:.2f}×"


def problems(case: CaseResult) -> str:
    """Error codes and scene changes seen; a clean run shows none."""
    found = [e for log in case.logs for e in log.errors]
    cuts = sum(log.scene_changes for log in case.logs)
    found += [f"{cuts} cuts"] if cuts else []
    return ", ".join(found) or "none"


def usage_cells(case: CaseResult | None, per: int) -> str:
    """Load, and minor faults and system ms per ``per`` frames, of one run (or dashes)."""
    if case is None or case.usage is None:
        return "– | – | –"
    return case.usage.cells(per)


def results_table(run: Run) -> str:
    lines = [
        "| size | sessions | in-between frames | wall s | in-between frames/s | input frames/s "
        "| p50 ms | p99 ms (n) | mean batch (calls) | batch sizes: calls | engine ms/row "
        "| vs eager one-by-one | one after another: frames/s | vs one after another "
        "| load (1 min) start→end | minor faults / frame | system ms / frame | errors / cuts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for c in run.cases:
        alone = f"{c.alone.frames_per_s:.2f}" if c.alone else "–"
        vs_alone = f"{c.vs_alone:.2f}×" if c.alone else "–"
        lines.append(
            f"| {c.size.name} ({c.size.width}×{c.size.height}) | {c.sessions} | {c.results} | {c.wall_s:.1f} "
            f"| {c.frames_per_s:.2f} | {c.inputs / c.wall_s:.2f} | {c.percentile_ms(50):.0f} "
            f"| {c.percentile_ms(99):.0f} ({len(c.latencies_ms)}) "
            f"| {c.mean_batch:.2f} ({c.engine.batch_count:g}) | {c.engine.histogram()} "
            f"| {c.engine_ms_per_row:.0f} "
            f"| {ratio(c, run)} | {alone} | {vs_alone} | {usage_cells(c, c.results)} | {problems(c)} |"
        )
    return "\n".join(lines)


def alone_table(run: Run) -> str:
    """The same clips one session after another: the denominator of "vs one after another"."""
    lines = [
        "| size | sessions | in-between frames | wall s (sum of streams) | in-between frames/s | p50 ms "
        "| mean batch (calls) | engine ms/row | load (1 min) start→end | minor faults / frame "
        "| system ms / frame | errors / cuts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for case in run.cases:
        a = case.alone
        if a is None:
            continue
        lines.append(
            f"| {a.size.name} ({a.size.width}×{a.size.height}) | {case.sessions} | {a.results} "
            f"| {a.wall_s:.1f} | {a.frames_per_s:.2f} | {a.percentile_ms(50):.0f} "
            f"| {a.mean_batch:.2f} ({a.engine.batch_count:g}) | {a.engine_ms_per_row:.0f} "
            f"| {usage_cells(a, a.results)} | {problems(a)} |"
        )
    return "\n".join(lines)


def reference_table(run: Run) -> str:
    lines = [
        "| size | pairs timed | median ms/pair before / after | frames/s (all) | warm-up round s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ref in run.references.items():
        before, after = statistics.median(ref.before_s) * 1000, statistics.median(ref.after_s) * 1000
        lines.append(
            f"| {name} | {len(ref.times_s)} | {before:.0f} / {after:.0f} | {ref.frames_per_s:.2f} "
            f"| {run.warmup_s[name]:.1f} |"
        )
    return "\n".join(lines)


def server_line(settings: Settings, engine: dict[str, Any], args: argparse.Namespace) -> str:
    return (
        f"- Server: engine `{settings.engine}` → backend `{engine['backend']}`, fp16 {engine['fp16']}, "
        f"device {engine['device']}, providers {', '.join(engine['providers'])} "
        f"(fell back: {engine['fell_back']}); max_batch_size {settings.max_batch_size}, "
        f"max_queue_delay_ms {settings.max_queue_delay_ms:g}, max_queue_size {settings.max_queue_size}; "
        f"sessions: factor 2 (t = 0.5), scale 1, scene-change threshold default; client sends "
        f"{args.input_format}{' (quality 95)' if args.input_format == 'jpeg' else ''}, "
        f"server returns {args.output_format}."
    )


@dataclass(frozen=True)
class RunInfo:
    """How the benchmark was invoked and what the machine was doing meanwhile."""

    argv: list[str]
    wall_s: float  # the whole run, loading included
    load_start: tuple[float, float, float]  # os.getloadavg() before and after
    load_end: tuple[float, float, float]
    malloc_tuned: bool = False  # whether tune_malloc applied at start


def loads(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def environment(settings: Settings, run: Run, args: argparse.Namespace, info: RunInfo) -> str:
    command = shlex.join(["python", "bench/serve_interpolation.py", *info.argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            device_line(),
            f"- Threads: torch {torch.get_num_threads()} (server, client and reference share one process).",
            f"- Versions: {versions()}.",
            server_line(settings, run.engine, args),
            f"- Command: `{command}` (run from the repository root), {date}; whole run {info.wall_s:.0f} s.",
            f"- Load average (1, 5, 15 min) at start {loads(info.load_start)}, at end "
            f"{loads(info.load_end)} (other jobs share these cores; above the core count, expect noise).",
            malloc_line(settings, info.malloc_tuned),
        ]
    )


def malloc_line(settings: Settings, tuned: bool) -> str:
    return (
        f"- glibc malloc tuned at start as `python -m server` does (`server/allocator.py`: mmap threshold "
        f"{settings.malloc_mmap_threshold_mb} MiB, trim threshold {settings.malloc_trim_threshold_mb} MiB, "
        f"{settings.malloc_arena_max or 'glibc’s'} arena(s)): {'applied' if tuned else 'not applied'}."
    )


def section(settings: Settings, run: Run, args: argparse.Namespace, info: RunInfo) -> str:
    return "\n\n".join(
        [
            "## Serving RIFE v4.0 interpolation over websockets",
            f"The vidserve app (uvicorn, in a thread of the benchmark process) with `{MODEL}`'s released "
            f"weights; N sessions opened with `POST /v1/sessions` and streamed over their websockets at "
            f"once. Each session sends {args.frames} frames of its own slow pan over scikit-image's "
            f"astronaut photograph (resized with Pillow, bicubic; the view moves width/320 px per frame, "
            f"sessions start {SESSION_OFFSET_XY[0]}×{SESSION_OFFSET_XY[1]} px apart), each frame sent after "
            "the previous one's `frame_done`; frames are encoded before timing. Wall time runs from the "
            "first send to the last `frame_done`; input frames/s counts every answered frame, the first "
            "of each session too (it only primes the session). Latency is send → `frame_done` of the "
            "frames that produce an in-between frame; p99 interpolates linearly, so with few samples it "
            "is near the maximum. Mean batch is the difference of `vidserve_batch_size_sum` over "
            "`vidserve_batch_size_count` in `/metrics` across the run, and batch sizes its buckets "
            "(exact up to 4 rows, then 5–6, 7–8, …); engine ms/row is "
            "`vidserve_compute_infer_duration_seconds_sum` over the rows (time inside engine calls; "
            'queueing and the pipeline around them excluded). "vs eager one-by-one" is the '
            "served in-between frames/s over the eager reference's frames/s: "
            "`Interpolator.interpolate(frame0, frame1, [0.5])` on the eager engine, one pair per call, "
            "on the same decoded frames (the first sessions' pairs), one untimed call first, timed "
            'before and after the served runs of its size and pooled. "vs one after another" is the '
            "served in-between frames/s over that of the same clips sent through the same server one "
            "session at a time (session 1 fully, then session 2, …; wall time the sum of the streams), run "
            "right after the concurrent run of that N, so it isolates batching (issue 16's goal: at least "
            "1.0× at 4 and 8 sessions). Beside every row: the 1-minute load average at the run's start and "
            "end, and the process's minor page faults and system CPU time over the run from "
            "`getrusage(RUSAGE_SELF)` (server, clients and all, session setup included), per in-between "
            "frame. Before the timed runs at each size, one untimed round of every session sending two "
            "frames warms the engine's shapes.",
            environment(settings, run, args, info),
            results_table(run),
            *(
                ["The same clips one session after another (the denominator):", alone_table(run)]
                if args.one_at_a_time
                else []
            ),
            "Eager reference, one pair per call, and the untimed warm-up round:",
            reference_table(run),
        ]
    )


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"a short run: defaults {QUICK}")
    parser.add_argument(
        "--sizes", default=None, help=f"comma-separated of {', '.join(SIZES)} (default 720p,1080p)"
    )
    parser.add_argument("--sessions", default=None, help="concurrent session counts (default 1,4,8)")
    parser.add_argument("--frames", type=int, default=None, help="frames each session sends (default 4)")
    parser.add_argument(
        "--reference-pairs", type=int, default=None, help="timed eager pairs per size (default 3)"
    )
    parser.add_argument("--input-format", default="jpeg", choices=FORMATS, help="what the clients send")
    parser.add_argument("--output-format", default="jpeg", choices=FORMATS, help="what the server returns")
    parser.add_argument(
        "--one-at-a-time",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also stream each N's clips one session after another, for the batching ratio (default on)",
    )
    add_server_args(parser)
    args = parse_with_defaults(parser, argv, QUICK, FULL)
    check_args(parser, args)
    return args


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The server and output flags both serving benchmarks take."""
    parser.add_argument("--engine", default="auto", choices=ENGINES, help="the server's engine backend")
    parser.add_argument("--providers", default=None, help="onnxruntime providers, comma-separated, in order")
    parser.add_argument("--fp16", action="store_true", help="half-precision engines (GPU)")
    parser.add_argument("--max-batch-size", type=int, default=None, help="default: the server's")
    parser.add_argument("--max-queue-delay-ms", type=float, default=None, help="default: the server's")
    parser.add_argument("--model-repository", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--write", action="store_true", help="update the section of --output")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")


def parse_with_defaults(
    parser: argparse.ArgumentParser, argv: Sequence[str], quick: dict[str, Any], full: dict[str, Any]
) -> argparse.Namespace:
    """Parse, then fill the flags left unset from the quick or the full run's defaults."""
    args = parser.parse_args(argv)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    unknown = [name for name in split(args.sizes) if name not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {', '.join(SIZES)}")
    if not all(n.isdigit() and int(n) >= 1 for n in split(args.sessions)):
        parser.error(f"--sessions must be positive integers, got {args.sessions!r}")
    if args.frames < 2 or args.reference_pairs < 1:
        parser.error("--frames must be at least 2 (one pair) and --reference-pairs at least 1")


@contextlib.contextmanager
def repository(path: Path | None) -> Iterator[Path]:
    """The given model repository, or a temporary one, so the user's cache is never touched."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="vidserve-bench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    start, load_start = time.perf_counter(), os.getloadavg()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    weights = fetch(MODEL, progress=False)
    with repository(args.model_repository) as repo:
        settings = server_settings(args, weights, repo)
        # why here: before the reference and the server load anything large, as the server does
        tuned = tune_malloc(settings)
        run = measure(args, settings, weights)
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
