"""The model repository: where exported engines live, one folder per model and version
(as Triton lays it out), one sub-folder per engine format and precision:

    <repository>/rife-4.26/onnx-fp32/model.onnx
    <repository>/rife-4.26/onnx-fp32/metadata.json

``metadata.json`` says what the engine takes and gives (names, dtypes, dynamic axes),
where its weights came from (sha256), and which exporter wrote it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.settings import StoreSettings

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript")
ENGINE_FILES: dict[Format, str] = {"onnx": "model.onnx", "torchscript": "model.ts"}


def default_repository() -> Path:
    """``VIDSERVE_MODEL_REPOSITORY``, else ``<cache>/model_repository``."""
    return StoreSettings().repository


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of an engine."""

    name: str
    # numpy-style dtype name: "float32", "float16", "bool"
    dtype: str
    # sizes, with the names of dynamic axes in place of numbers
    shape: list[int | str]


@dataclass(frozen=True)
class EngineMetadata:
    """What ``metadata.json`` holds beside each engine."""

    model: str  # registry name, "rife-4.26"
    family: str  # "rife"
    version: str  # release, "4.26"
    format: Format
    precision: Literal["fp32", "fp16"]
    file: str  # engine file name inside the folder
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    weights_sha256: str | None  # of the checkpoint the engine was exported from
    exporter: dict[str, str]  # library versions that wrote it
    opset: int | None = None  # ONNX only
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific facts (padding, scales)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EngineMetadata:
        raw = json.loads(text)
        raw["inputs"] = [TensorInfo(**t) for t in raw["inputs"]]
        raw["outputs"] = [TensorInfo(**t) for t in raw["outputs"]]
        return cls(**raw)


def engine_dir(repository: Path, model: str, fmt: Format, fp16: bool) -> Path:
    return repository / model / f"{fmt}-{'fp16' if fp16 else 'fp32'}"


def read_metadata(folder: Path) -> EngineMetadata:
    return EngineMetadata.from_json((folder / "metadata.json").read_text())


def is_current(
    folder: Path, weights_sha256: str, files: Sequence[str], exporter: dict[str, str] | None = None
) -> bool:
    """Whether ``folder`` holds ``files`` exported from the weights with this sha256 (and,
    when ``exporter`` is given, by these library versions: an upgrade exports again)."""
    if not (folder / "metadata.json").is_file() or not all((folder / f).is_file() for f in files):
        return False
    metadata = read_metadata(folder)
    if exporter is not None and metadata.exporter != exporter:
        return False
    return metadata.weights_sha256 == weights_sha256


def write_metadata(folder: Path, metadata: EngineMetadata) -> Path:
    path = folder / "metadata.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(metadata.to_json())
    os.replace(tmp, path)
    return path
