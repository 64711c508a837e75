"""The parts of the GPU run (``bench/gpu.sh``, issue 16), one process each, and its report.

Each part writes ``<work>/<part>.json`` and rewrites it after every row, so a part stopped at
its time limit still leaves what it measured; ``report`` merges them (with ``gpu.sh``'s
``steps.jsonl``: each step's exit status and seconds) into ``gpu.json`` and renders
``gpu.md``, a BENCHMARKS.md section ready to paste.

    env     the device, the driver, torch/CUDA/cuDNN, the packages and where they came from
    ort     which ONNX Runtime providers exist, and which load for a RIFE 4.6 ONNX engine
    rife    RIFE 4.6 and 4.26 at 2× on 1080p streams (B streams per engine call), and at 4K
            (scale 0.5) with fp16 and fp32 compared pixel by pixel against eager fp32
    xmem    16 XMem streams at 480p, two objects each, stepped together through ``step_batch``
    tests   the suite's tests whose engines run on the GPU there (pytest in this process)
    report  ``gpu.json`` and ``gpu.md`` into ``--out``
    render  the section again from a ``gpu.json`` (``--write BENCHMARKS.md`` to replace it there)

Every engine is loaded as the server loads it (``models.rife.loading.make_runner`` with its
parts, ``models.xmem.export``), from the hashed-weight recipe (``tests/hashed_weights.py``):
the released checkpoints' shapes, so their FLOPs, but no meaningful pictures; the 4.6, 4.26
and XMem releases cannot be fetched on a machine without a network. Frames: scikit-image's
astronaut photograph panned a few pixels a frame (``bench/xmem_core.FrameSource``).

Run from the repository root: ``python bench/gpu_run.py PART --work DIR [--device cuda|cpu]
[--quick] [--budget-s S]``; ``--quick`` uses tiny sizes (the CPU dry run and its test).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; models/ and tests/ live at the root
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from report import cpu_model, os_name, replace_section, timed  # noqa: E402
from torch import Tensor  # noqa: E402
from xmem_core import FrameSource, blob_mask  # noqa: E402

from models.repository import Format  # noqa: E402
from models.rife.checkpoint import expected_shapes  # noqa: E402
from models.rife.export import Part  # noqa: E402
from models.rife.inference import Between, PreparedFrame, RifeEngines, batch_key, pair_steps, prepare  # noqa: E402
from models.rife.loading import ensure_engine, make_runner  # noqa: E402
from models.rife.spec import get_spec  # noqa: E402
from models.runtime import GPU_PROVIDERS, EngineKind, OnnxRunner, ProviderSpec  # noqa: E402
from models.steps import Steps, run_steps  # noqa: E402
from models.xmem.batch import step_batch  # noqa: E402
from models.xmem.export import XMemEngines, eager_engines, export_xmem, load_engines  # noqa: E402
from models.xmem.inference_core import InferenceCore  # noqa: E402
from tests.hashed_weights import hashed_state_dict  # noqa: E402
from tests.models.xmem_support import hashed_xmem  # noqa: E402

SECTION = "gpu"
PARTS = ("env", "ort", "rife", "xmem", "tests")
RELEASES = ("4.6", "4.26")
# the record's targets (issue 16)
XMEM_STREAMS_TARGET, XMEM_FPS_TARGET, XMEM_P99_TARGET_MS = 16, 30.0, 50.0
RIFE_TARGET_RELEASE, RIFE_OUTPUT_FPS_TARGET = "4.26", 1000.0
# ONNX Runtime as the README configures it on a GPU host, best first
ORT_REQUEST: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# the wheels gpu.sh installs, reported with their versions and origin
PACKAGES = (
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "numpy",
    "pillow",
    "scikit-image",
    "pytest",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-multipart",
    "websockets",
    "av",
    "pycocotools",
    "opentelemetry-api",
    "prometheus-client",
    "httpx",
)
CARRIED_AT = "/tmp/site"  # where gpu.sh installs the carried wheels
# tests whose engines follow the server's device (``torch_device``: CUDA where there is one)
# and need nothing downloaded; the files that mention CUDA are added to these
DEVICE_TESTS = ("tests/server/test_segmentation.py",)


@dataclass(frozen=True)
class Sizes:
    """What one run measures; the full run's numbers, or tiny ones for the CPU dry run."""

    rife_hd: tuple[int, int]  # (H, W) of the 2× stream benchmark, at scale 1
    rife_4k: tuple[int, int]  # (H, W) of the fp16-against-fp32 comparison, at scale 0.5
    rife_batches: tuple[int, ...]  # streams per engine call
    xmem_hw: tuple[int, int]  # (H, W) of each XMem stream's frames
    xmem_streams: int
    xmem_per_call: tuple[int, ...]  # frames per step_batch call; 8 is the server's max batch size
    measure_s: float  # timed seconds per row, after its warm-up
    warmup_s: float  # at least this long warming up, and at least WARMUP_CALLS calls
    xmem_warm_rounds: int  # untimed rounds after the prompt round
    fp32_torchscript: bool  # also TorchScript fp32 (the dry run keeps eager fp32 and fp16 alone)


FULL = Sizes((1080, 1920), (2160, 3840), (1, 8), (480, 854), 16, (16, 8), 1.5, 0.3, 5, True)
QUICK = Sizes((64, 96), (128, 192), (2,), (32, 48), 4, (2,), 0.1, 0.0, 1, False)
WARMUP_CALLS = 3
MIN_CALLS = 5
POOL_FRAMES = 4  # frames each benchmark cycles through, so no call reuses the last one's input
PRECISION_SHIFT = 8  # the 4K pair: frames 0 and 8 of the pan, (8, 16) px apart


# --- one part's record ---------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


class Record:
    """One part's JSON in the work folder, rewritten whole after every change."""

    def __init__(self, work: Path, part: str, argv: Sequence[str]) -> None:
        self.path = work / f"{part}.json"
        self.start = time.perf_counter()
        self.data: dict[str, Any] = {
            "part": part,
            "finished": False,
            "command": shlex.join(["python", "bench/gpu_run.py", *argv]),
            "date": now(),
            "device": device_name(),
            "torch": torch.__version__,
            "notes": [],
            "errors": [],
        }
        self.save()

    def save(self) -> None:
        self.data["wall_s"] = round(time.perf_counter() - self.start, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def add(self, key: str, row: dict[str, Any]) -> None:
        self.data.setdefault(key, []).append(row)
        print(f"  {key}: {json.dumps(row)}", flush=True)
        self.save()

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.data["notes"].append(text)
        self.save()

    def error(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {type(exc).__name__}: {str(exc)[:400]}"
        print(f"  error: {message}", flush=True)
        self.data["errors"].append(message)
        self.save()

    def finish(self) -> None:
        self.data["finished"] = True
        self.save()


@dataclass(frozen=True)
class Budget:
    """The part's time limit: cases that would not fit are skipped, with a note, rather than
    killed half-way by gpu.sh's timeout."""

    end: float  # time.perf_counter() at which the part must be done

    @classmethod
    def of(cls, seconds: float) -> Budget:
        return cls(time.perf_counter() + seconds)

    def allows(self, seconds: float) -> bool:
        return time.perf_counter() + seconds < self.end


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({cpu_model()})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))


def time_calls(call: Callable[[], object], device: torch.device, sizes: Sizes) -> list[float]:
    """Warm up, then ms of each call (the device synchronised after it) for ``measure_s``."""
    start = time.perf_counter()
    warm = 0
    while warm < WARMUP_CALLS or time.perf_counter() - start < sizes.warmup_s:
        call()
        synchronize(device)
        warm += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_CALLS or time.perf_counter() - start < sizes.measure_s:
        began = time.perf_counter()
        call()
        synchronize(device)
        times.append((time.perf_counter() - began) * 1000)
    return times


# --- env -----------------------------------------------------------------------------------


def nvidia_smi() -> dict[str, str] | None:
    """The GPU as the driver reports it (read only), or None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = "name,driver_version,memory.total,clocks.max.sm,power.limit,temperature.gpu,pstate"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    values = [v.strip() for v in out.stdout.splitlines()[0].split(",")] if out.stdout.strip() else []
    return dict(zip(fields.split(","), values, strict=False))


def package_versions() -> dict[str, dict[str, Any]]:
    """Each package's version and whether it came from gpu.sh's carried wheels."""
    found: dict[str, dict[str, Any]] = {}
    for name in PACKAGES:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        where = str(dist.locate_file(""))
        found[name] = {"version": dist.version, "carried": where.startswith(CARRIED_AT)}
    return found


def cuda_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        # the defaults the server runs with, recorded because they change fp32's precision
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_mib": props.total_memory // (1024 * 1024),
            "devices": torch.cuda.device_count(),
        }
    return info


def part_env(args: argparse.Namespace, record: Record) -> int:
    record.set("python", f"{platform.python_version()} ({sys.executable})")
    record.set("host", {"cpu": cpu_model(), "cores": os.cpu_count(), "os": os_name()})
    record.set("nvidia_smi", nvidia_smi())
    record.set("cuda", cuda_info())
    record.set("packages", package_versions())
    if args.device == "cuda" and not torch.cuda.is_available():
        record.note("torch sees no CUDA device: the GPU parts cannot run")
        return 3
    return 0


# --- ort -----------------------------------------------------------------------------------


def ort_package() -> str | None:
    """Which distribution provides ``import onnxruntime``: the GPU build or the CPU one."""
    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def part_ort(args: argparse.Namespace, record: Record) -> int:
    """Which providers exist, and which really load for an engine that asks for all three."""
    if importlib.util.find_spec("onnxruntime") is None:
        record.note("onnxruntime is not installed")
        return 0
    import onnxruntime as ort

    available = ort.get_available_providers()
    record.set("version", ort.__version__)
    record.set("package", ort_package())
    record.set("available", available)
    record.set("gpu_providers", {p: p in available for p in GPU_PROVIDERS})
    with tempfile.TemporaryDirectory(prefix="vidserve-gpu-ort-") as tmp:
        try:
            probe = ort_probe(Path(tmp), args)
            record.set("probe", probe)
        except Exception as exc:
            record.error("RIFE 4.6 ONNX probe", exc)
    return 0


def ort_probe(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A RIFE 4.6 ONNX engine asking for TensorRT, CUDA, CPU: what loaded, and its output
    against eager torch on the CPU for one small pair."""
    weights = hashed_weights("4.6", tmp)
    runner = make_runner("rife-4.6", weights, "onnx", repository=tmp / "repo", providers=list(ORT_REQUEST))
    assert isinstance(runner, OnnxRunner)
    eager = make_runner("rife-4.6", weights, "eager")
    spec = get_spec("4.6")
    source = FrameSource.make(64, 96)
    frames = [prepare(spec, source.frame(t), 1.0) for t in (0, 4)]
    outputs = [
        pair_output(RifeEngines(spec, r), frames[0], frames[1])
        for r in (runner, eager)  # the ONNX engine gives its outputs on its own device
    ]
    return {
        "requested": list(ORT_REQUEST),
        "loaded": runner.providers,
        "fell_back": bool(runner.missing),
        "device": str(runner.device),
        "max_levels_vs_eager_cpu": difference(outputs[0], outputs[1])["max_levels"],
    }


# --- rife ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RifeCase:
    """One release on one engine kind and precision, on one device."""

    release: str  # "4.26"
    kind: EngineKind
    fp16: bool
    device: torch.device  # where the torch kinds run (ONNX Runtime places itself)

    @property
    def label(self) -> str:
        on = " (CPU)" if self.device.type == "cpu" and torch.cuda.is_available() else ""
        return f"{self.kind} {'fp16' if self.fp16 else 'fp32'}{on}"


@dataclass(frozen=True)
class LoadedRife:
    case: RifeCase
    engines: RifeEngines
    export_s: float | None  # None for eager: nothing to export
    load_s: float


def hashed_weights(release: str, folder: Path) -> Path:
    """The recipe's weights for ``release`` as a checkpoint file, as bench/rife_features.py does."""
    path = folder / f"rife-{release}.pkl"
    if not path.exists():
        torch.save(hashed_state_dict(expected_shapes(get_spec(release))), path)
    return path


def rife_parts(release: str) -> tuple[Part, ...]:
    """The parts the server loads: 4.22+ runs its feature encoder apart, once per frame."""
    return ("encoder", "flow") if get_spec(release).encoder_channels else ("full",)


def load_rife(
    case: RifeCase, weights: Path, repository: Path, providers: Sequence[ProviderSpec]
) -> LoadedRife:
    """Export (the exported kinds) and load each part as the server's RIFE service does."""
    model, parts = f"rife-{case.release}", rife_parts(case.release)
    export_s = None
    if case.kind != "eager":
        fmt: Format = "onnx" if case.kind == "onnx" else "torchscript"
        _, export_s = timed(
            lambda: [
                ensure_engine(model, weights, fmt, fp16=case.fp16, repository=repository, part=p)
                for p in parts
            ]
        )

    def load() -> dict[Part, Any]:
        return {
            p: make_runner(
                model,
                weights,
                case.kind,
                fp16=case.fp16,
                repository=repository,
                providers=providers,
                device=case.device,
                part=p,
            )
            for p in parts
        }

    runners, load_s = timed(load)
    engines = RifeEngines(get_spec(case.release), runners[parts[-1]], runners.get("encoder"))
    return LoadedRife(case, engines, export_s, load_s)


def run_together(engines: RifeEngines, steps: list[Steps[Any, Any, list[Between]]]) -> list[list[Between]]:
    """Several streams' pipelines driven as the scheduler drives them: each round, the rows
    all of them wait for under one batch key go to the engine in one call."""
    waiting: dict[int, list[Any]] = {}
    answers: dict[int, list[Between]] = {}
    for i, s in enumerate(steps):
        advance(i, s, None, waiting, answers)
    while waiting:
        key = batch_key(next(iter(waiting.values()))[0])
        group = [i for i, rows in waiting.items() if batch_key(rows[0]) == key]
        results = engines.execute([row for i in group for row in waiting[i]])
        for i in group:
            mine, results = results[: len(waiting[i])], results[len(waiting[i]) :]
            advance(i, steps[i], mine, waiting, answers)
    return [answers[i] for i in range(len(steps))]


def advance(
    i: int,
    steps: Steps[Any, Any, list[Between]],
    results: list[Any] | None,
    waiting: dict[int, list[Any]],
    answers: dict[int, list[Between]],
) -> None:
    """Send stream ``i`` its results (None: start it): it waits for more rows, or is done."""
    try:
        waiting[i] = next(steps) if results is None else steps.send(results)
    except StopIteration as done:
        waiting.pop(i, None)
        answers[i] = done.value


def unencoded(frame: PreparedFrame) -> PreparedFrame:
    """A frame as it arrives: padded on the device already, its features not yet computed."""
    return PreparedFrame(frame.pixels, frame.padded, frame.scale)


class Streams:
    """B live 2× streams: each keeps its previous frame (with its features, as a session
    does) and takes the next frame of the pool every round."""

    def __init__(self, rife: RifeEngines, pool: list[PreparedFrame], count: int) -> None:
        self.rife, self.pool, self.t = rife, pool, 0
        self.previous = [unencoded(pool[s % len(pool)]) for s in range(count)]

    def round(self) -> list[Between]:
        """One new frame per stream → its one in-between frame (t = 0.5)."""
        self.t += 1
        new = [unencoded(self.pool[(self.t + s) % len(self.pool)]) for s in range(len(self.previous))]
        encodes = self.rife.encoder is not None
        steps = [
            pair_steps(self.rife.spec, a, b, [0.5], encodes=encodes, scene_change_threshold=None)
            for a, b in zip(self.previous, new, strict=True)
        ]
        with torch.inference_mode():
            betweens = run_together(self.rife, steps)
        self.previous = new
        return [b[0] for b in betweens]


def frame_pool(release: str, hw: tuple[int, int], scale: float, device: torch.device) -> list[PreparedFrame]:
    source = FrameSource.make(*hw)
    return [prepare(get_spec(release), source.frame(t), scale, device) for t in range(POOL_FRAMES)]


def stream_row(loaded: LoadedRife, pool: list[PreparedFrame], batch: int, sizes: Sizes) -> dict[str, Any]:
    """Engine-only calls, then calls that also copy each frame to the host as the server does."""
    device = loaded.engines.device
    streams = Streams(loaded.engines, pool, batch)
    times = time_calls(streams.round, device, sizes)
    copied = time_calls(lambda: [b.frame.cpu() for b in streams.round()], device, sizes)
    between_fps = batch * len(times) / (sum(times) / 1000)
    height, width = pool[0].pixels.shape[:2]
    return {
        "release": loaded.case.release,
        "engine": loaded.case.label,
        "size": [height, width],
        "padded": list(pool[0].padded.shape[-2:]),
        "scale": pool[0].scale,
        "streams": batch,
        "calls": len(times),
        "median_ms": statistics.median(times),
        "p99_ms": percentile(times, 99),
        "between_fps": between_fps,
        # why 2×: each input frame leaves as itself and one in-between frame
        "output_fps": 2 * between_fps,
        "output_fps_with_host_copy": 2 * batch * len(copied) / (sum(copied) / 1000),
    }


def pair_output(rife: RifeEngines, frame0: PreparedFrame, frame1: PreparedFrame) -> Tensor:
    """The in-between frame (t = 0.5) of one fresh pair: float32 3×H×W on the CPU."""
    steps = pair_steps(
        rife.spec,
        unencoded(frame0),
        unencoded(frame1),
        [0.5],
        encodes=rife.encoder is not None,
        scene_change_threshold=None,
    )
    with torch.inference_mode():
        (between,) = run_steps(steps, rife.execute)
    return between.frame.float().cpu()


def difference(out: Tensor, ref: Tensor) -> dict[str, Any]:
    """out, ref: 3×H×W in [0, 1] → how far apart, in 8-bit levels, after clipping as the
    server's ``to_uint8`` clips."""
    a, b = (x.double().clamp(0, 1) * 255 for x in (out, ref))
    diff = (a - b).abs()
    return {
        "max_levels": float(diff.max()),
        "mean_levels": float(diff.mean()),
        "share_over_1_level": float((diff > 1).double().mean()),
        "finite": bool(torch.isfinite(out).all()),
    }


def engine_kinds(sizes: Sizes, cuda_ep: bool) -> list[tuple[EngineKind, bool]]:
    """(kind, fp16): eager fp32 first (the precision reference), then TorchScript fp32 and
    fp16, and ONNX where ONNX Runtime has a CUDA provider. Eager fp16 is no engine the
    server offers."""
    kinds: list[tuple[EngineKind, bool]] = [("eager", False)]
    kinds += [("torchscript", False)] if sizes.fp32_torchscript else []
    kinds += [("torchscript", True)]
    return kinds + ([("onnx", False), ("onnx", True)] if cuda_ep else [])


def part_rife(args: argparse.Namespace, record: Record) -> int:
    sizes, device, budget = args.sizes, torch.device(args.device), Budget.of(args.budget_s)
    providers = gpu_providers() if device.type == "cuda" else ["CPUExecutionProvider"]
    record.set("config", {"sizes": sizes.__dict__, "providers": providers, "timesteps": [0.5]})
    with tempfile.TemporaryDirectory(prefix="vidserve-gpu-rife-") as tmp:
        run = RifeRun(Path(tmp) / "repo", providers, sizes, record, budget)
        for release in RELEASES:
            weights = hashed_weights(release, Path(tmp))
            references: dict[str, Tensor] = {}
            for kind, fp16 in engine_kinds(sizes, "CUDAExecutionProvider" in providers):
                run.case(RifeCase(release, kind, fp16, device), weights, references)
            if device.type == "cuda" and not args.quick:
                run.case(RifeCase(release, "eager", False, torch.device("cpu")), weights, references)
    return 0


def gpu_providers() -> list[str]:
    """ONNX Runtime's providers of ORT_REQUEST that exist here (CPU always)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    return [p for p in ORT_REQUEST if p in ort.get_available_providers()]


@dataclass(frozen=True)
class RifeRun:
    """What every RIFE case of the part shares."""

    repository: Path  # a temporary model repository: the user's cache is never touched
    providers: Sequence[ProviderSpec]
    sizes: Sizes
    record: Record
    budget: Budget

    def case(self, case: RifeCase, weights: Path, references: dict[str, Tensor]) -> None:
        """Load one case, time it at 1080p for each batch and at 4K, and compare its 4K frame
        with the release's first case's (eager fp32 on the run's device), kept in ``references``."""
        on_host = case.device.type == "cpu" and torch.cuda.is_available()  # the cross-device row
        rows = 0 if on_host else len(self.sizes.rife_batches)
        if not self.budget.allows(5 + 3 * self.sizes.measure_s * (rows + 1)):
            self.record.note(f"RIFE {case.release} {case.label}: skipped, the part's time was nearly up")
            return
        try:
            loaded = load_rife(case, weights, self.repository, self.providers)
            self.record.add(
                "rife_setup",
                {
                    "release": case.release,
                    "engine": case.label,
                    "export_s": loaded.export_s,
                    "load_s": loaded.load_s,
                },
            )
            if not on_host:
                pool = frame_pool(case.release, self.sizes.rife_hd, 1.0, case.device)
                for batch in self.sizes.rife_batches:
                    if self.budget.allows(3 * self.sizes.measure_s + 2):
                        self.record.add("rife_streams", stream_row(loaded, pool, batch, self.sizes))
            self.record.add("rife_4k", precision_row(loaded, self.sizes, references, timed_too=not on_host))
        except Exception as exc:
            self.record.error(f"RIFE {case.release} {case.label}", exc)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def precision_row(
    loaded: LoadedRife, sizes: Sizes, references: dict[str, Tensor], *, timed_too: bool
) -> dict[str, Any]:
    """The 4K pair's in-between frame against eager fp32's on the run's device (the first
    case, which becomes the reference); then, unless on the host, one 4K stream's time per frame."""
    case = loaded.case
    source = FrameSource.make(*sizes.rife_4k)
    pair = [prepare(get_spec(case.release), source.frame(t), 0.5, case.device) for t in (0, PRECISION_SHIFT)]
    out, seconds = timed(lambda: pair_output(loaded.engines, pair[0], pair[1]))
    ref = references.setdefault("reference", out)  # eager fp32 on the run's device comes first
    row: dict[str, Any] = {"release": case.release, "engine": case.label, "size": list(sizes.rife_4k)}
    row["padded"] = list(pair[0].padded.shape[-2:])
    row["reference"] = "itself" if ref is out else "eager fp32"
    row |= difference(out, ref)
    if timed_too:
        pool = frame_pool(case.release, sizes.rife_4k, 0.5, case.device)
        times = time_calls(Streams(loaded.engines, pool, 1).round, loaded.engines.device, sizes)
        row |= {"median_ms": statistics.median(times), "fps": 1000 * len(times) / sum(times)}
    else:
        row |= {"pair_s": seconds}
    return row


# --- xmem ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class XMemCase:
    kind: EngineKind
    fp16: bool

    @property
    def label(self) -> str:
        return f"{self.kind} {'fp16' if self.fp16 else 'fp32'}"


def load_xmem(
    case: XMemCase, repository: Path, device: torch.device, providers: Sequence[ProviderSpec]
) -> tuple[XMemEngines, float | None, float]:
    """XMem's three engines from the hashed recipe, exported and loaded as the server does."""
    net = hashed_xmem()
    if case.kind == "eager":
        # why a copy: moving the engines to the device moves the network, which is cached
        engines, load_s = timed(lambda: eager_engines(copy.deepcopy(net), device=device))
        return engines, None, load_s
    fmt: Format = "onnx" if case.kind == "onnx" else "torchscript"
    (folder, _), export_s = timed(lambda: export_xmem(net, repository, fmt, fp16=case.fp16))
    engines, load_s = timed(lambda: load_engines(folder, case.kind, providers=providers, device=device))
    return engines, export_s, load_s


@dataclass
class RoundTimes:
    """One round: every stream's frame in, its mask out on the host."""

    latencies_ms: list[float]  # per frame: from the round's start until its mask was on the host
    prepare_ms: float  # ``begin``: normalise, pad, upload (on the host, one frame after another)
    engine_ms: float  # ``step_batch`` calls
    result_ms: float  # adopt + index mask to the host
    is_memory: bool  # the round's frames wrote memory (the streams are aligned: all or none)


def xmem_round(
    cores: list[InferenceCore], frames: list[np.ndarray], mask: np.ndarray | None, per_call: int
) -> RoundTimes:
    clock = time.perf_counter
    start = clock()
    latencies, prepare_s, engine_s, result_s, memory = [], 0.0, 0.0, 0.0, False
    for first in range(0, len(cores), per_call):
        chunk = cores[first : first + per_call]
        began = clock()
        works = [core.begin(frame, mask) for core, frame in zip(chunk, frames[first:], strict=False)]
        prepared = clock()
        results = step_batch(chunk[0].engines, works)
        stepped = clock()
        for core, result in zip(chunk, results, strict=True):
            core.adopt(result).index_mask()  # uint8 H×W on the host: what a client is sent
        done = clock()
        prepare_s += prepared - began
        engine_s += stepped - prepared
        result_s += done - stepped
        memory = memory or any(r.is_memory_frame for r in results)
        latencies += [(done - start) * 1000] * len(chunk)
    return RoundTimes(latencies, prepare_s * 1000, engine_s * 1000, result_s * 1000, memory)


def xmem_row(
    engines: XMemEngines, case: XMemCase, per_call: int, sizes: Sizes, budget: Budget
) -> dict[str, Any]:
    """Fresh streams: a prompt round (both objects' masks), warm-up rounds, then rounds for
    twice ``measure_s``; stream s shows the pan 3·s frames ahead of stream 0."""
    height, width = sizes.xmem_hw
    source = FrameSource.make(height, width)
    cores = [InferenceCore(engines) for _ in range(sizes.xmem_streams)]
    mask = blob_mask(height, width, 2, [1, 2])

    def frames(t: int) -> list[np.ndarray]:
        return [source.frame(t + 3 * s) for s in range(len(cores))]

    prompt = xmem_round(cores, frames(0), mask, per_call)
    for t in range(1, 1 + sizes.xmem_warm_rounds):
        xmem_round(cores, frames(t), None, per_call)
    rounds: list[RoundTimes] = []
    start, t = time.perf_counter(), 1 + sizes.xmem_warm_rounds
    while (len(rounds) < MIN_CALLS or time.perf_counter() - start < 2 * sizes.measure_s) and budget.allows(1):
        rounds.append(xmem_round(cores, frames(t), None, per_call))
        t += 1
    elapsed = time.perf_counter() - start
    latencies = [ms for r in rounds for ms in r.latencies_ms]
    memory = [ms for r in rounds if r.is_memory for ms in r.latencies_ms]
    fps = len(rounds) / elapsed
    p99 = percentile(latencies, 99)
    return {
        "engine": case.label,
        "streams": len(cores),
        "per_call": per_call,
        "size": [height, width],
        "objects": 2,
        "rounds": len(rounds),
        "fps_per_stream": fps,
        "median_ms": statistics.median(latencies),
        "p99_ms": p99,
        "max_ms": max(latencies),
        "memory_rounds": sum(r.is_memory for r in rounds),
        "memory_p99_ms": percentile(memory, 99) if memory else None,
        "prepare_ms": statistics.median(r.prepare_ms for r in rounds),
        "engine_ms": statistics.median(r.engine_ms for r in rounds),
        "result_ms": statistics.median(r.result_ms for r in rounds),
        "prompt_round_ms": max(prompt.latencies_ms),
        "meets_target": fps >= XMEM_FPS_TARGET and p99 <= XMEM_P99_TARGET_MS,
    }


def part_xmem(args: argparse.Namespace, record: Record) -> int:
    sizes, device, budget = args.sizes, torch.device(args.device), Budget.of(args.budget_s)
    providers = gpu_providers() if device.type == "cuda" else ["CPUExecutionProvider"]
    cases = [XMemCase(kind, fp16) for kind, fp16 in engine_kinds(sizes, "CUDAExecutionProvider" in providers)]
    record.set("config", {"sizes": sizes.__dict__, "providers": providers})
    with tempfile.TemporaryDirectory(prefix="vidserve-gpu-xmem-") as tmp:
        for case in cases:
            xmem_case(case, Path(tmp), device, providers, sizes, record, budget)
    return 0


def xmem_case(
    case: XMemCase,
    repository: Path,
    device: torch.device,
    providers: Sequence[ProviderSpec],
    sizes: Sizes,
    record: Record,
    budget: Budget,
) -> None:
    if not budget.allows(5 + 3 * sizes.measure_s * len(sizes.xmem_per_call)):
        record.note(f"XMem {case.label}: skipped, the part's time was nearly up")
        return
    try:
        engines, export_s, load_s = load_xmem(case, repository, device, providers)
        record.add("xmem_setup", {"engine": case.label, "export_s": export_s, "load_s": load_s})
        for per_call in sizes.xmem_per_call:
            if budget.allows(3 * sizes.measure_s + 2):
                record.add("xmem_streams", xmem_row(engines, case, per_call, sizes, budget))
    except Exception as exc:
        record.error(f"XMem {case.label}", exc)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- tests ---------------------------------------------------------------------------------


def device_test_files() -> list[str]:
    """DEVICE_TESTS and every test file that mentions CUDA, as paths from the repository root;
    not tests/bench/, whose tests check these scripts on the CPU."""
    mention = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "tests").rglob("test_*.py")
        if "cuda" in path.read_text(errors="replace").lower() and path.parent.name != "bench"
    )
    return list(dict.fromkeys([*DEVICE_TESTS, *mention]))


def unavailable_fixtures() -> dict[str, str]:
    """Fixtures that cannot be set up on a machine without a network, and why."""
    from models.weights.fetch import weights_path
    from models.weights.registry import get_entry

    missing: dict[str, str] = {}
    if not weights_path(get_entry("rife-4.0")).is_file():
        missing["rife_v40_weights"] = "the released RIFE v4.0 weights are downloaded, and are not cached here"
    if not (REPO_ROOT.parent / "shared" / "conformance").is_dir():
        missing["conformance_dir"] = "the conformance vectors (../shared/conformance) are not here"
    return missing


class TestRecorder:
    """A pytest plugin: deselects tests that need an unavailable fixture, and records each
    test's outcome into the part's JSON as it happens (so a timeout keeps what ran)."""

    def __init__(self, record: Record, unavailable: dict[str, str]) -> None:
        self.record, self.unavailable = record, unavailable
        self.outcomes: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
        keep: list[Any] = []
        drop: list[Any] = []
        for item in items:
            needs = [f for f in getattr(item, "fixturenames", []) if f in self.unavailable]
            (drop if needs else keep).append(item)
            if needs:
                self.outcomes[item.nodeid] = {"outcome": "deselected", "why": self.unavailable[needs[0]]}
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
        self.record.set("collected", len(keep) + len(drop))
        self.record.set("outcomes", self.outcomes)

    def pytest_runtest_logreport(self, report: Any) -> None:
        failed_outside_call = report.when != "call" and report.outcome == "failed"
        if report.when == "call" or report.skipped or failed_outside_call:
            entry: dict[str, Any] = {"outcome": report.outcome, "seconds": round(report.duration, 2)}
            if report.outcome != "passed":
                entry["why"] = why(report)
            if report.when != "call":
                entry["when"] = report.when
            self.outcomes[report.nodeid] = entry
            self.record.set("outcomes", self.outcomes)


def why(report: Any) -> str:
    """A failure's or skip's one-line reason: the crash message, else the report's last line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:300]
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        return str(report.longrepr[-1])[:300]
    lines = str(report.longreprtext).strip().splitlines()
    return lines[-1][:300] if lines else ""


def part_tests(args: argparse.Namespace, record: Record) -> int:
    import pytest

    files = device_test_files()
    unavailable = unavailable_fixtures()
    options = ["-q", "-p", "no:cacheprovider", "-o", "console_output_style=classic"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        options.append("--timeout=120")  # why: one hung server test must not take the whole step
    if args.collect_only:
        options.append("--collect-only")
    record.set("files", files)
    record.set("unavailable", unavailable)
    record.set("pytest", shlex.join(["python", "-m", "pytest", *options, *files]))
    record.set("mode", "collect-only" if args.collect_only else "run")
    code = pytest.main(
        [*options, *(str(REPO_ROOT / f) for f in files)], plugins=[TestRecorder(record, unavailable)]
    )
    record.set("exit_code", int(code))
    return 0


# --- report --------------------------------------------------------------------------------


def read_steps(work: Path) -> dict[str, dict[str, Any]]:
    path = work / "steps.jsonl"
    if not path.is_file():
        return {}
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {s["step"]: s for s in steps}


def merge(work: Path) -> dict[str, Any]:
    """Every part's JSON and gpu.sh's steps in one document."""
    data: dict[str, Any] = {"schema": 1, "steps": read_steps(work)}
    for part in PARTS:
        path = work / f"{part}.json"
        if path.is_file():
            data[part] = json.loads(path.read_text())
    meta = work / "run.json"
    if meta.is_file():
        data["run"] = json.loads(meta.read_text())
    return data


def part_report(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = merge(args.work)
    (out / "gpu.json").write_text(json.dumps(data, indent=1))
    body = render(data)
    (out / "gpu.md").write_text(f"<!-- bench:{SECTION} -->\n{body}\n<!-- /bench:{SECTION} -->\n")
    print(body)
    return 0


def part_render(args: argparse.Namespace) -> int:
    body = render(json.loads(args.json.read_text()))
    print(body)
    if args.write is not None:
        # why not report.write_section: it refuses on a busy machine, and these numbers were
        # taken on another machine, so this one's load says nothing about them
        path: Path = args.write
        old = path.read_text() if path.is_file() else ""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(replace_section(old, SECTION, body))
        os.replace(tmp, path)
        print(f"wrote {path}")
    return 0


# --- markdown ------------------------------------------------------------------------------


# the report's tables, "a | b | c" (a bar inside a cell is escaped)
RIFE_STREAMS_HEAD = (
    "release | engine | size (padded) | streams per call | median ms/call | p99 ms/call "
    "| in-between frames/s | output frames/s | with host copy"
)
RIFE_4K_HEAD = (
    "release | engine | padded | median ms/frame | frames/s | compared with | max \\|Δ\\| (levels) "
    "| mean \\|Δ\\| (levels) | pixels > 1 level (%) | finite"
)
XMEM_HEAD = (
    "engine | streams | frames per call | size | rounds | fps per stream | median ms | p99 ms "
    "| memory p99 ms | begin ms | step_batch ms | results ms | prompt round ms | meets target"
)


def table(head: str, rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    """A markdown table: ``head`` is "a | b | c"; columns from ``right_from`` on align right."""
    columns = len(head.split(" | "))
    rule = ["---" if i < right_from else "---:" for i in range(columns)]
    lines = [f"| {head} |", "|" + "|".join(rule) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def num(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def hw(size: Sequence[int]) -> str:
    return f"{size[0]}×{size[1]}"


def step_line(data: dict[str, Any], part: str) -> str:
    """How gpu.sh's step for ``part`` ended, for the part's lines."""
    step = data.get("steps", {}).get(part)
    record = data.get(part)
    if step is None:
        return "no step record (not run by gpu.sh)"
    status = step.get("status", "?")
    if status == "timed out":
        return f"**stopped at its time limit of {step.get('timeout_s')} s**; what it measured before is below"
    if status == "skipped":
        return f"skipped: {step.get('why', 'no time left')}"
    text = (
        f"{status} in {step.get('seconds')} s (limit {step.get('timeout_s')} s), exit status {step.get('rc')}"
    )
    if record is not None and not record.get("finished"):
        text += "; the part did not finish"
    return text


def part_lines(data: dict[str, Any], part: str) -> list[str]:
    record = data.get(part) or {}
    if not record and part not in data.get("steps", {}):
        return ["- Not run in this call (`gpu.sh --only` left it out, or an earlier step stopped the run)."]
    lines = [
        f"- Command: `{record.get('command', 'python bench/gpu_run.py ' + part)}` (from gpu.sh), "
        f"{record.get('date', '?')}; {step_line(data, part)}."
    ]
    lines += [f"- Note: {n}" for n in record.get("notes", [])]
    lines += [f"- **Error**: {e}" for e in record.get("errors", [])]
    return lines


def device_line(data: dict[str, Any]) -> str:
    env = data.get("env") or {}
    cuda, smi, host = env.get("cuda") or {}, env.get("nvidia_smi") or {}, env.get("host") or {}
    if cuda.get("available"):
        gpu = (
            f"{cuda.get('name')} ({cuda.get('memory_mib')} MiB, compute capability {cuda.get('capability')}, "
            f"{cuda.get('multiprocessors')} multiprocessors; driver {smi.get('driver_version', '?')}, "
            f"max SM clock {smi.get('clocks.max.sm', '?')}, power limit {smi.get('power.limit', '?')})"
        )
    else:
        gpu = "no CUDA device"
    return f"- Device: {gpu}; host {host.get('cpu', '?')}, {host.get('cores', '?')} logical cores."


def versions_line(data: dict[str, Any]) -> str:
    env = data.get("env") or {}
    cuda, packages = env.get("cuda") or {}, env.get("packages") or {}
    installed = ", ".join(f"{n} {p['version']}" for n, p in packages.items() if not p["carried"])
    carried = ", ".join(f"{n} {p['version']}" for n, p in packages.items() if p["carried"])
    return (
        f"- Versions: Python {env.get('python', '?').split(' ')[0]}, "
        f"CUDA {cuda.get('torch_cuda')} (torch's), "
        f"cuDNN {cuda.get('cudnn')}; installed: {installed or '?'}; carried as wheels: {carried or 'none'}; "
        f"{(env.get('host') or {}).get('os', '?')}. TF32: cuDNN convolutions "
        f"{on_off(cuda.get('cudnn_allow_tf32'))}, matmul {on_off(cuda.get('matmul_allow_tf32'))}; "
        f"cudnn.benchmark {on_off(cuda.get('cudnn_benchmark'))} (torch's defaults, as the server runs)."
    )


def on_off(flag: Any) -> str:
    return "on" if flag else "off"


def is_quick(data: dict[str, Any]) -> bool:
    return bool((data.get("run") or {}).get("quick"))


def targets(data: dict[str, Any]) -> str:
    if is_quick(data):
        return "Targets: not evaluated (a dry run with tiny sizes)."
    xmem = [
        r for r in (data.get("xmem") or {}).get("xmem_streams", []) if r["streams"] == XMEM_STREAMS_TARGET
    ]
    rife = [
        r
        for r in (data.get("rife") or {}).get("rife_streams", [])
        if r["release"] == RIFE_TARGET_RELEASE and r["size"] == list(FULL.rife_hd)
    ]
    rows = []
    if xmem:
        best = max(xmem, key=lambda r: (r["meets_target"], r["fps_per_stream"]))
        where = f"{best['engine']}, {best['per_call']} frames per call"
        rows.append(
            [
                f"XMem: {XMEM_STREAMS_TARGET} streams at 480p, ≥ {XMEM_FPS_TARGET:g} fps each",
                f"{best['fps_per_stream']:.1f} fps ({where})",
                yes(best["fps_per_stream"] >= XMEM_FPS_TARGET),
            ]
        )
        rows.append(
            [
                f"XMem: p99 per-frame latency ≤ {XMEM_P99_TARGET_MS:g} ms",
                f"{best['p99_ms']:.1f} ms ({where})",
                yes(best["p99_ms"] <= XMEM_P99_TARGET_MS),
            ]
        )
    else:
        rows.append([f"XMem: {XMEM_STREAMS_TARGET} streams at 480p", "not measured", "—"])
    if rife:
        best = max(rife, key=lambda r: r["output_fps"])
        where = f"{best['engine']}, {best['streams']} streams per call"
        rows.append(
            [
                f"RIFE {RIFE_TARGET_RELEASE} 2× at 1080p ≥ {RIFE_OUTPUT_FPS_TARGET:,.0f} output frames/s",
                f"{best['output_fps']:,.0f} ({where}); "
                f"{best['output_fps_with_host_copy']:,.0f} with the host copy",
                yes(best["output_fps"] >= RIFE_OUTPUT_FPS_TARGET),
            ]
        )
    else:
        rows.append([f"RIFE {RIFE_TARGET_RELEASE} 2× at 1080p", "not measured", "—"])
    return table("target | best measured | met", rows, right_from=3)


def yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def setup_text(rows: Sequence[dict[str, Any]]) -> str:
    """ "4.6 torchscript fp16: export 1.1 s, load 0.1 s; ..." (eager: no export)."""
    return "; ".join(
        " ".join(filter(None, [s.get("release"), s["engine"]]))
        + (": no export" if s["export_s"] is None else f": export {s['export_s']:.1f} s")
        + f", load {s['load_s']:.1f} s"
        for s in rows
    )


def rife_section(data: dict[str, Any]) -> str:
    record = data.get("rife") or {}
    streams = [
        [
            r["release"],
            r["engine"],
            f"{hw(r['size'])} ({hw(r['padded'])})",
            str(r["streams"]),
            num(r["median_ms"], 2),
            num(r["p99_ms"], 2),
            num(r["between_fps"], 0),
            num(r["output_fps"], 0),
            num(r["output_fps_with_host_copy"], 0),
        ]
        for r in record.get("rife_streams", [])
    ]
    precision = [
        [
            r["release"],
            r["engine"],
            hw(r["padded"]),
            num(r.get("median_ms"), 2),
            num(r.get("fps"), 1),
            r.get("reference") or "—",
            num(r.get("max_levels"), 2),
            num(r.get("mean_levels"), 4),
            num(100 * r["share_over_1_level"], 3) if "share_over_1_level" in r else "—",
            yes(r["finite"]),
        ]
        for r in record.get("rife_4k", [])
    ]
    setup = setup_text(record.get("rife_setup", []))
    return "\n\n".join(
        [
            "### RIFE 4.6 and 4.26: 2× streams at 1080p, and 4K in fp16 against fp32",
            "\n".join(part_lines(data, "rife")),
            "B live 2× streams, each with its previous frame kept (4.26: with its encoder features, "
            "as a session keeps them); a call is one round: every stream's new frame through the "
            "pipeline's own steps (`pair_steps`, t = 0.5), the rows of all B streams in one engine call "
            "per batch key (4.26: the encoder on the B new frames, then the flow part on B rows), as "
            "the scheduler batches them. Frames are padded and on the device before timing; the "
            "device is synchronised after each call. Output frames/s counts each input frame twice "
            '(itself and its in-between frame, 2×); "with host copy" also copies every in-between '
            "frame to the host as the server does before encoding it. Scale 1 at 1080p.",
            table(
                RIFE_STREAMS_HEAD,
                streams,
                right_from=3,
            ),
            "4K at scale 0.5 (RIFE's advice for 4K): one pair (frames 0 and 8 of the pan, (8, 16) px "
            "apart) through each engine, its in-between frame compared with eager fp32's on the same "
            "device, both clipped to [0, 1] and counted in 8-bit levels (|Δ| × 255); then one stream's "
            "time per frame. The CPU row is eager fp32 on the host, the same comparison across devices.",
            table(
                RIFE_4K_HEAD,
                precision,
                right_from=3,
            ),
            f"Export and load: {setup or 'none recorded'}.",
        ]
    )


def xmem_section(data: dict[str, Any]) -> str:
    record = data.get("xmem") or {}
    rows = [
        [
            r["engine"],
            str(r["streams"]),
            str(r["per_call"]),
            hw(r["size"]),
            str(r["rounds"]),
            num(r["fps_per_stream"], 1),
            num(r["median_ms"], 1),
            num(r["p99_ms"], 1),
            num(r["memory_p99_ms"], 1),
            num(r["prepare_ms"], 1),
            num(r["engine_ms"], 1),
            num(r["result_ms"], 1),
            num(r["prompt_round_ms"], 0),
            "—" if is_quick(data) else yes(r["meets_target"]),
        ]
        for r in record.get("xmem_streams", [])
    ]
    setup = setup_text(record.get("xmem_setup", []))
    return "\n\n".join(
        [
            "### XMem: streams at 480p through `step_batch`",
            "\n".join(part_lines(data, "xmem")),
            "N streams, two objects each (elliptic blobs given on frame 0), default settings "
            "(`XMemConfig()`: a memory frame every 5th, top-k 30, long-term memory on), each at its own "
            "point of a pan over the photograph. A round takes one frame of every stream: `begin` "
            "(normalise, pad, upload), `step_batch` on as many frames per call as the column says (8 is the "
            "server's default largest batch), then `adopt` and the index mask on the host. Latency "
            "per frame: from the round's start until its mask is on the host. The streams start "
            'together, so their memory frames fall in the same round, the slowest case; "memory '
            'p99" is over those rounds alone. The ms columns after it are medians per round. '
            f"Target: ≥ {XMEM_FPS_TARGET:g} fps per stream with p99 ≤ {XMEM_P99_TARGET_MS:g} ms.",
            table(
                XMEM_HEAD,
                rows,
                right_from=1,
            ),
            f"Export and load: {setup or 'none recorded'}.",
        ]
    )


def ort_section(data: dict[str, Any]) -> str:
    record = data.get("ort") or {}
    lines = part_lines(data, "ort")
    probe = record.get("probe") or {}
    if "available" in record:
        lines.append(
            f"- onnxruntime {record.get('version')} (package `{record.get('package')}`); providers built in "
            f"(`get_available_providers`): {', '.join(record['available'])}."
        )
        lines += [f"- {provider}: {provider_state(provider, record, probe)}" for provider in GPU_PROVIDERS]
    if probe:
        lines.append(
            f"- A RIFE 4.6 ONNX engine asking for {', '.join(probe['requested'])} loaded "
            f"{', '.join(probe['loaded'])} (fell back: {'yes' if probe['fell_back'] else 'no'}; outputs on "
            f"{probe['device']}); its in-between frame is within {probe['max_levels_vs_eager_cpu']:.3f} "
            "levels of eager torch's on the CPU."
        )
    return "\n\n".join(["### ONNX Runtime providers", "\n".join(lines)])


def provider_state(provider: str, record: dict[str, Any], probe: dict[str, Any]) -> str:
    if provider in probe.get("loaded", []):
        return "loads."
    if not record.get("gpu_providers", {}).get(provider):
        return "**not available**: not built into this onnxruntime. " + PROVIDER_WHY
    return "built in, but **did not load** for the probe (its libraries or a GPU are missing)."


PROVIDER_WHY = (
    "onnxruntime-gpu's wheel (hundreds of MB; installed it takes 340 MB) and TensorRT's cannot "
    "travel in the 64 MiB a call carries, and the machine reaches no registry, so the server's "
    "ONNX engines on the GPU, IOBinding on the device and TensorRT stay unmeasured."
)


def tests_section(data: dict[str, Any]) -> str:
    record = data.get("tests") or {}
    lines = part_lines(data, "tests")
    outcomes: dict[str, dict[str, Any]] = record.get("outcomes", {})
    counts: dict[str, int] = {}
    for o in outcomes.values():
        counts[o["outcome"]] = counts.get(o["outcome"], 0) + 1
    if record:
        lines.append(
            f"- pytest: `{record.get('pytest')}` ({record.get('mode')}), "
            f"exit code {record.get('exit_code', '—')}."
        )
        lines.append(
            f"- Files: {', '.join(f'`{f}`' for f in record.get('files', []))}: the server's engines follow "
            "its device (`torch_device`), so there they run on CUDA."
        )
        nothing = "nothing run (collect-only)" if record.get("mode") == "collect-only" else "no outcomes"
        total = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or nothing
        lines.append(f"- Collected {record.get('collected', '?')}: {total}.")
        for name, why in (record.get("unavailable") or {}).items():
            lines.append(f"- Deselected where they need `{name}`: {why}.")
    failed = [(k, o) for k, o in outcomes.items() if o["outcome"] == "failed"]
    if failed:
        lines.append(
            table("failed test | why", [[f"`{k}`", o.get("why", "")] for k, o in failed], right_from=2)
        )
    return "\n\n".join(["### Tests on the GPU machine", "\n".join(lines)])


def render(data: dict[str, Any]) -> str:
    env = data.get("env") or {}
    run = data.get("run") or {}
    name = (env.get("cuda") or {}).get("name") or "no GPU (dry run)"
    whole = f"; whole run {run['seconds']} s" if "seconds" in run else ""
    return "\n\n".join(
        [
            f"## GPU run: {name} (bench/gpu.sh)",
            "One run of `bash bench/gpu.sh` on the device machine (issue 16): the torch engines "
            "(eager, TorchScript fp32 and fp16) on CUDA for RIFE 4.6 and 4.26 and for XMem, which "
            "ONNX Runtime providers load, and the tests whose engines run on the GPU there. Weights: "
            "the hashed-weight recipe (`tests/hashed_weights.py`; XMem's through "
            "`tests/models/xmem_support.hashed_xmem`), with the released checkpoints' shapes and so "
            "their FLOPs, but no meaningful pictures: the releases cannot be fetched on a machine "
            "without a network. Wall-clock times around each call, the device synchronised after it, "
            "after untimed warm-up calls; p99 interpolates linearly between samples.",
            "\n".join(
                [
                    device_line(data),
                    versions_line(data),
                    f"- Command: `{run.get('command', 'bash bench/gpu.sh')}` from the repository root "
                    f"({run.get('mode', '?')}), {run.get('date', env.get('date', '?'))}{whole}; "
                    + ", ".join(f"{k} {s.get('status')}" for k, s in data.get("steps", {}).items())
                    + ".",
                ]
            ),
            "### Targets",
            targets(data),
            rife_section(data),
            xmem_section(data),
            ort_section(data),
            tests_section(data),
        ]
    )


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=[*PARTS, "report", "render"])
    parser.add_argument("--work", type=Path, help="the folder the parts write into and report reads")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run, for the CPU")
    parser.add_argument(
        "--budget-s", type=float, default=120.0, help="the part's time; cases that would not fit are skipped"
    )
    parser.add_argument("--collect-only", action="store_true", help="tests: collect, run nothing")
    parser.add_argument("--out", type=Path, help="report: where gpu.json and gpu.md go")
    parser.add_argument("--json", type=Path, help="render: a gpu.json")
    parser.add_argument("--write", type=Path, help="render: replace the section of this file (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    needs = {"report": ["work", "out"], "render": ["json"]}.get(args.part, ["work"])
    missing = [f"--{n}" for n in needs if getattr(args, n) is None]
    if missing:
        parser.error(f"{args.part} needs {' and '.join(missing)}")
    args.sizes = QUICK if args.quick else FULL
    return args


PART_RUNNERS: dict[str, Callable[[argparse.Namespace, Record], int]] = {
    "env": part_env,
    "ort": part_ort,
    "rife": part_rife,
    "xmem": part_xmem,
    "tests": part_tests,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.part == "report":
        return part_report(args)
    if args.part == "render":
        return part_render(args)
    if args.quick and args.device == "cpu":
        # why: a dry run measures nothing, and on a shared CPU torch's second thread spins at
        # each barrier while another process holds the core: calls ran 100× slower so
        torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    record = Record(args.work, args.part, argv)
    code = PART_RUNNERS[args.part](args, record)
    record.finish()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
