"""Load XMem for use: weights from the registry (or a file), and its three engines of the
chosen kind, exported into the model repository on first use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from models.engine_folder import SUFFIXES
from models.repository import Format, default_repository, engine_dir, is_current
from models.rife.export import exporter_versions
from models.runtime import CPU_PROVIDERS, EngineKind, ProviderSpec
from models.weights.fetch import sha256_file, weights_path
from models.weights.registry import get_entry
from models.xmem.checkpoint import load_xmem
from models.xmem.engines import ENGINE_NAMES
from models.xmem.export import XMemEngines, eager_engines, export_xmem, load_engines

log = logging.getLogger(__name__)


class WeightsMissingError(FileNotFoundError):
    """XMem's weights are not in the cache; the message says how to get them."""


def cached_weights(model: str) -> Path:
    """The cached weights of ``model``, or ``WeightsMissingError`` saying how to fetch them.

    Used where a download must not happen implicitly (a server answering requests)."""
    path = weights_path(get_entry(model))
    if not path.is_file():
        raise WeightsMissingError(
            f"{model} weights are not in the cache ({path}); run `python -m models fetch {model}` "
            f"or pass a released checkpoint with --weights"
        )
    return path


def load_xmem_engines(
    model: str,
    weights: Path,
    engine: EngineKind,
    *,
    fp16: bool = False,
    repository: Path | None = None,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> XMemEngines:
    """The three engines over these weights, exporting them when missing or made from others;
    ``device`` is for the torch kinds (ONNX Runtime places itself by its providers)."""
    if engine == "eager":
        if fp16:
            raise ValueError("fp16 needs exported engines (torchscript or onnx)")
        return eager_engines(load_xmem(weights), device=device)
    fmt: Format = "onnx" if engine == "onnx" else "torchscript"
    folder = engine_dir(repository or default_repository(), model, fmt, fp16)
    sha = sha256_file(weights)
    if not is_current(folder, sha, [f"{name}{SUFFIXES[fmt]}" for name in ENGINE_NAMES], exporter_versions()):
        log.info("%s: exporting %s engines into %s", model, fmt, folder)
        export_xmem(
            load_xmem(weights),
            repository or default_repository(),
            fmt,
            fp16=fp16,
            model_name=model,
            weights_sha256=sha,
        )
    return load_engines(folder, engine, providers=providers, device=device)
