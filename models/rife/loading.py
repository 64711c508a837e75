"""Load a RIFE model for use: weights from the registry (or a file), and an engine of
the chosen kind, exported into the model repository on first use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from models.repository import ENGINE_FILES, Format, default_repository, engine_dir, is_current
from models.rife.checkpoint import load_ifnet
from models.rife.export import export_rife, exporter_versions
from models.rife.inference import Interpolator
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import get_spec
from models.runtime import CPU_PROVIDERS, EngineKind, OnnxRunner, ProviderSpec, Runner, TorchRunner
from models.weights.fetch import resolve_weights, sha256_file

log = logging.getLogger(__name__)


def ensure_engine(
    model: str, weights: Path, fmt: Format, *, fp16: bool = False, repository: Path | None = None
) -> Path:
    """The engine file for these weights, exporting it when missing or made from other weights."""
    repository = repository or default_repository()
    folder = engine_dir(repository, model, fmt, fp16)
    sha = sha256_file(weights)
    if is_current(folder, sha, [ENGINE_FILES[fmt]], exporter_versions()):
        return folder / ENGINE_FILES[fmt]
    log.info("%s: exporting the %s engine into %s", model, fmt, folder)
    spec = get_spec(model)
    folder, metadata = export_rife(
        load_ifnet(weights, spec), spec, repository, fmt, fp16=fp16, model_name=model, weights_sha256=sha
    )
    return folder / metadata.file


def make_runner(
    model: str,
    weights: Path,
    engine: EngineKind,
    *,
    fp16: bool = False,
    repository: Path | None = None,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> Runner:
    """One runner of the chosen kind over IFNet with these weights; ``device`` is for the
    torch kinds (ONNX Runtime places itself by its providers)."""
    if engine == "eager":
        if fp16:
            raise ValueError("fp16 needs an exported engine (torchscript or onnx)")
        return TorchRunner(load_ifnet(weights, get_spec(model)), "eager", device=device)
    path = ensure_engine(model, weights, engine, fp16=fp16, repository=repository)
    if engine == "onnx":
        return OnnxRunner(path, providers)
    return TorchRunner.load_torchscript(path, half_inputs=(0, 1) if fp16 else (), device=device)


def load_interpolator(
    model: str,
    *,
    engine: EngineKind = "eager",
    weights: Path | None = None,
    fp16: bool = False,
    repository: Path | None = None,
    scene_change_threshold: float | None = DEFAULT_SCENE_CHANGE_THRESHOLD,
    progress: bool = True,
) -> Interpolator:
    """Everything between a model name and interpolated frames."""
    spec = get_spec(model)
    path = resolve_weights(model, weights, progress=progress)
    runner = make_runner(model, path, engine, fp16=fp16, repository=repository)
    return Interpolator(spec, runner, scene_change_threshold)
