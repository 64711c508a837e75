"""Load a RIFE model for use: weights from the registry (or a file), and an engine of
the chosen kind, exported into the model repository on first use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from models.repository import ENGINE_FILES, Format, default_repository, engine_dir, is_current
from models.rife.checkpoint import load_ifnet
from models.rife.export import Part, export_rife, exporter_versions, half_inputs, part_model, part_module
from models.rife.inference import Interpolator
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import get_spec
from models.runtime import CPU_PROVIDERS, EngineKind, OnnxRunner, ProviderSpec, Runner, TorchRunner
from models.weights.fetch import resolve_weights, sha256_file

log = logging.getLogger(__name__)


def ensure_engine(
    model: str,
    weights: Path,
    fmt: Format,
    *,
    fp16: bool = False,
    repository: Path | None = None,
    part: Part = "full",
) -> Path:
    """The engine file for these weights, exporting it when missing or made from other weights."""
    repository = repository or default_repository()
    folder = engine_dir(repository, part_model(model, part), fmt, fp16)
    sha = sha256_file(weights)
    if is_current(folder, sha, [ENGINE_FILES[fmt]], exporter_versions()):
        return folder / ENGINE_FILES[fmt]
    log.info("%s: exporting the %s engine into %s", part_model(model, part), fmt, folder)
    spec = get_spec(model)
    net = load_ifnet(weights, spec)
    folder, metadata = export_rife(
        net, spec, repository, fmt, fp16=fp16, model_name=model, weights_sha256=sha, part=part
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
    part: Part = "full",
) -> Runner:
    """One runner of the chosen kind over IFNet with these weights (or over one ``part`` of
    it); ``device`` is for the torch kinds (ONNX Runtime places itself by its providers)."""
    if engine == "eager":
        if fp16:
            raise ValueError("fp16 needs an exported engine (torchscript or onnx)")
        return TorchRunner(part_module(load_ifnet(weights, get_spec(model)), part), "eager", device=device)
    path = ensure_engine(model, weights, engine, fp16=fp16, repository=repository, part=part)
    if engine == "onnx":
        return OnnxRunner(path, providers)
    return TorchRunner.load_torchscript(path, half_inputs=half_inputs(part) if fp16 else (), device=device)


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
