"""From settings to loaded, warmed engines: weights, export on first start, backend and
providers."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.repository import ENGINE_FILES, default_repository, engine_dir
from models.rife.export import Part, part_model
from models.rife.loading import make_runner
from models.rife.spec import RifeSpec, get_spec
from models.runtime import EngineKind, ProviderSpec, Runner
from models.weights.fetch import FetchError, fetch
from models.weights.registry import get_entry
from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines
from models.xmem.inference_core import InferenceCore
from models.xmem.loading import load_xmem_engines
from server.engines.engine import Engine, EngineError, MeteredRunner
from server.settings import Settings

log = logging.getLogger(__name__)

# why this order: TensorRT is fastest where it builds, CUDA covers its unsupported nodes,
# CPU keeps the server up on a host whose GPU libraries are broken (and we report that)
GPU_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
WARMUP_HW = (256, 256)  # small, so warm-up costs little; TensorRT rebuilds per new shape anyway


def choose_backend(settings: Settings) -> EngineKind:
    """``auto``: ONNX Runtime on a CUDA host; TorchScript on CPU, where it is fastest
    (BENCHMARKS.md: 1.1–1.4× eager, while ORT's CPU provider is slower than eager)."""
    if settings.engine != "auto":
        return settings.engine
    return "onnx" if torch.cuda.is_available() else "torchscript"


def choose_providers(settings: Settings, repository: Path, model: str) -> list[ProviderSpec]:
    names = settings.providers or (
        list(GPU_PROVIDER_ORDER) if torch.cuda.is_available() else ["CPUExecutionProvider"]
    )
    return [_with_options(name, settings, tensorrt_cache(repository, model)) for name in names]


def tensorrt_cache(repository: Path, model: str) -> Path:
    """TensorRT engines are built for one GPU model by one TensorRT: key their cache by both
    (and by onnxruntime's version), so a new card or library builds afresh, a restart does not."""
    import onnxruntime as ort

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no-gpu"
    key = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu}-ort{ort.__version__}").strip("-")
    return repository / model / "tensorrt-cache" / key


def _with_options(name: str, settings: Settings, trt_cache: Path) -> ProviderSpec:
    if name != "TensorrtExecutionProvider":
        return name
    # why a cache: building TensorRT engines takes minutes; reuse them across restarts
    return (
        name,
        {
            "trt_fp16_enable": str(settings.fp16),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(trt_cache),
        },
    )


def torch_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def resolve_weights(settings: Settings, model: str) -> Path:
    explicit = settings.weights.get(model)
    if explicit is not None:
        if not explicit.is_file():
            raise EngineError(f"{model}: weights file {explicit} (VIDSERVE_WEIGHTS) does not exist")
        return explicit
    try:
        return fetch(model, cache=settings.cache_dir, progress=False)
    except FetchError as exc:
        raise EngineError(f"{model}: {exc}") from exc


def load_rife_engine(
    settings: Settings, model: str, observe: Callable[[str, int, float], None] | None = None
) -> tuple[Engine, RifeSpec]:
    """Load (exporting on first start) and warm up one RIFE engine: the whole network, or for
    4.22+ its flow part and its feature encoder (``observe`` meters the encoder's calls)."""
    entry = get_entry(model)
    if entry.family != "rife":
        raise EngineError(f"{model}: family {entry.family!r} is not served yet")
    spec = get_spec(model)
    repository = _repository(settings)
    backend = choose_backend(settings)
    weights = resolve_weights(settings, model)
    has_encoder = spec.encoder_channels > 0
    main: Part = "flow" if has_encoder else "full"

    def runner_of(part: Part) -> Runner:
        return make_runner(
            model,
            weights,
            backend,
            fp16=settings.fp16,
            repository=repository,
            providers=choose_providers(settings, repository, model),
            device=torch_device(),
            part=part,
        )

    encoder = runner_of("encoder") if has_encoder else None
    if encoder is not None and observe is not None:
        encoder = MeteredRunner(encoder, part_model(model, "encoder"), observe)
    path = None
    if backend != "eager":
        path = engine_dir(repository, part_model(model, main), backend, settings.fp16) / ENGINE_FILES[backend]
    engine = Engine(model, backend, runner_of(main), settings.fp16, path, encoder)
    warm_up_rife(engine)
    log.info("%s: ready on %s", model, engine.describe())
    return engine, spec


def warm_up_rife(engine: Engine) -> None:
    """One small call, so the first user frame does not pay for initialisation."""
    height, width = WARMUP_HW
    frames = torch.rand(2, 1, 3, height, width, device=engine.device)
    timestep, scale = torch.tensor([0.5]), torch.tensor([1.0])
    if engine.encoder is not None:
        engine.run(frames[0], frames[1], engine.encode(frames[0]), engine.encode(frames[1]), timestep, scale)
    else:
        engine.run(frames[0], frames[1], timestep, scale)
    engine.warm = True


def load_xmem_engine_set(
    settings: Settings, model: str, observe: Callable[[str, int, float], None]
) -> tuple[XMemEngines, EngineKind]:
    """Load (exporting on first start) and warm up XMem's three engines, each metered."""
    entry = get_entry(model)
    if entry.family != "xmem":
        raise EngineError(f"{model}: family {entry.family!r} is not a segmentation model")
    repository = _repository(settings)
    backend = choose_backend(settings)
    try:
        engines = load_xmem_engines(
            model,
            resolve_weights(settings, model),
            backend,
            fp16=settings.fp16,
            repository=repository,
            providers=choose_providers(settings, repository, model),
            device=torch_device(),
        )
    except ValueError as exc:
        raise EngineError(f"{model}: {exc}") from exc

    def meter(name: str) -> MeteredRunner:
        return MeteredRunner(getattr(engines, name), f"{model}.{name}", observe)

    metered = XMemEngines(meter("encode_key"), meter("encode_value"), meter("segment"), engines.widths)
    warm_up_xmem(engines)
    return metered, backend


def warm_up_xmem(engines: XMemEngines) -> None:
    """A masked frame then a predicted one: every engine runs once before the first user."""
    core = InferenceCore(engines, XMemConfig(mem_every=1))
    height, width = WARMUP_HW
    frame = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 2] = 1
    core.step(frame, mask)
    core.step(frame)


def _repository(settings: Settings) -> Path:
    if settings.model_repository is not None:
        return settings.model_repository
    return settings.cache_dir / "model_repository" if settings.cache_dir else default_repository()
