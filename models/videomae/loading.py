"""Load the clip encoder for use: weights from the registry (or a file), and its two parts
of the chosen kind, exported into the model repository on first use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from models.engine_folder import SUFFIXES
from models.repository import Format, default_repository, engine_dir, is_current
from models.rife.export import exporter_versions
from models.runtime import CPU_PROVIDERS, EngineKind, ProviderSpec
from models.videomae.checkpoint import load_videomae
from models.videomae.export import PART_NAMES, VideoMAEEngines, eager_engines, export_videomae, load_engines
from models.videomae.labels import K400_CLASSES
from models.weights.fetch import sha256_file

log = logging.getLogger(__name__)


def load_videomae_engines(
    model: str,
    weights: Path,
    engine: EngineKind,
    *,
    classes: int = K400_CLASSES,
    fp16: bool = False,
    repository: Path | None = None,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> VideoMAEEngines:
    """``embed`` and ``encode`` over these weights, exporting them when missing or made from
    other weights; ``device`` is for the torch kinds (ONNX Runtime places itself)."""
    if engine == "eager":
        if fp16:
            raise ValueError("fp16 needs exported engines (torchscript or onnx)")
        return eager_engines(load_videomae(weights, classes).to(device), device=device)
    fmt: Format = "onnx" if engine == "onnx" else "torchscript"
    repository = repository or default_repository()
    folder = engine_dir(repository, model, fmt, fp16)
    sha = sha256_file(weights)
    files = [f"{name}{SUFFIXES[fmt]}" for name in PART_NAMES]
    if not is_current(folder, sha, files, exporter_versions()):
        log.info("%s: exporting %s engines into %s", model, fmt, folder)
        net = load_videomae(weights, classes)
        export_videomae(net, repository, fmt, model_name=model, fp16=fp16, weights_sha256=sha)
    return load_engines(folder, engine, providers=providers, device=device)
