"""A model exported as a folder of named engines, in the model repository:

    <repository>/<model>/<format>-<precision>/{<part>.onnx | <part>.ts ...} + metadata.json

One ``metadata.json`` describes the folder: its top-level ``file``/``inputs``/``outputs``
are the first engine's, so tools that read one engine a folder keep working, and
``extra["engines"]`` lists every part (file, inputs, outputs) in call order. Each engine
is written under a temporary name and renamed, and the metadata goes last, so a folder with
metadata always holds complete engines of one export.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.repository import EngineMetadata, Format, TensorInfo, engine_dir, read_metadata, write_metadata
from models.runtime import (
    COMPILE_LOCK,
    CPU_PROVIDERS,
    EngineKind,
    OnnxRunner,
    ProviderSpec,
    Runner,
    TorchRunner,
)

SUFFIXES: dict[Format, str] = {"onnx": ".onnx", "torchscript": ".ts"}
# why 17: every op the networks here use is standard by opset 17, and TensorRT 8.6+ and
# ORT 1.14+ both accept it
ONNX_OPSET = 17


@dataclass(frozen=True)
class ExportPart:
    """One engine to export: a module, a sample batch to trace, and what it takes and gives."""

    name: str
    module: nn.Module
    sample: tuple[Tensor, ...]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


@dataclass(frozen=True)
class FolderInfo:
    """What a folder's metadata says beyond its engines."""

    model: str  # registry name
    family: str
    version: str
    weights_sha256: str | None
    exporter: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific facts


def half_input_positions(inputs: Sequence[TensorInfo]) -> tuple[int, ...]:
    """Which positional inputs an engine takes in float16 (the runners cast them)."""
    return tuple(i for i, t in enumerate(inputs) if t.dtype == "float16")


def dynamic_axes(infos: Sequence[TensorInfo]) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in infos}


def export_folder(
    repository: Path, fmt: Format, fp16: bool, parts: Sequence[ExportPart], info: FolderInfo
) -> tuple[Path, EngineMetadata]:
    """Write every part and ``metadata.json``; returns the folder and the metadata."""
    folder = engine_dir(repository, info.model, fmt, fp16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").unlink(missing_ok=True)
    files = {p.name: f"{p.name}{SUFFIXES[fmt]}" for p in parts}
    for part in parts:
        _write_engine(part, folder / files[part.name], fmt)
    first = parts[0]
    engines = {
        p.name: {"file": files[p.name], "inputs": _dicts(p.inputs), "outputs": _dicts(p.outputs)}
        for p in parts
    }
    metadata = EngineMetadata(
        model=info.model,
        family=info.family,
        version=info.version,
        format=fmt,
        precision="fp16" if fp16 else "fp32",
        file=files[first.name],
        inputs=first.inputs,
        outputs=first.outputs,
        weights_sha256=info.weights_sha256,
        exporter=info.exporter,
        opset=ONNX_OPSET if fmt == "onnx" else None,
        extra={"engines": engines, **info.extra},
    )
    write_metadata(folder, metadata)
    return folder, metadata


def engine_infos(
    metadata: EngineMetadata, names: Sequence[str]
) -> dict[str, tuple[str, list[TensorInfo], list[TensorInfo]]]:
    """Engine name → (file, inputs, outputs), read back from ``metadata.extra``."""
    listed = metadata.extra.get("engines")
    if not isinstance(listed, dict) or set(listed) != set(names):
        raise ValueError(f"metadata of {metadata.model} does not list the engines {', '.join(names)}")
    return {
        name: (
            str(e["file"]),
            [TensorInfo(**t) for t in e["inputs"]],
            [TensorInfo(**t) for t in e["outputs"]],
        )
        for name, e in listed.items()
    }


def load_folder(
    folder: Path,
    kind: EngineKind,
    names: Sequence[str],
    *,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Runner], EngineMetadata]:
    """The engines an ``export_folder`` folder holds, as runners of ``kind``, by name."""
    metadata = read_metadata(folder)
    wanted: Format = "onnx" if kind == "onnx" else "torchscript"
    if kind == "eager" or metadata.format != wanted:
        raise ValueError(f"{folder} holds {metadata.format} engines; cannot load them as {kind}")
    runners: dict[str, Runner] = {}
    for name, (file, inputs, _) in engine_infos(metadata, names).items():
        if kind == "onnx":
            runners[name] = OnnxRunner(folder / file, providers)
        else:
            runners[name] = TorchRunner.load_torchscript(folder / file, half_input_positions(inputs), device)
    return runners, metadata


def _write_onnx(part: ExportPart, path: Path) -> None:
    with COMPILE_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter, expected
        # why dynamo=False: the torch.export-based exporter needs onnxscript, which is not a
        # dependency; the TorchScript-based one exports these graphs with their dynamic axes
        torch.onnx.export(
            part.module,
            part.sample,
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[t.name for t in part.inputs],
            output_names=[t.name for t in part.outputs],
            dynamic_axes=dynamic_axes(part.inputs) | dynamic_axes(part.outputs),
        )
    import onnx

    onnx.checker.check_model(str(path))


def _write_engine(part: ExportPart, target: Path, fmt: Format) -> None:
    """Written under a temporary name, then renamed: a crash leaves no partial engine."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=target.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt == "onnx":
            _write_onnx(part, tmp)
        else:
            with COMPILE_LOCK:
                scripted = torch.jit.script(part.module)
            scripted.save(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _dicts(infos: Sequence[TensorInfo]) -> list[dict[str, Any]]:
    return [asdict(t) for t in infos]
