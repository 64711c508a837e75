"""Test support: IFNet with real or hashed weights, on every engine this machine runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from models.repository import Format
from models.rife.checkpoint import expected_shapes, load_ifnet
from models.rife.export import Part, export_rife, half_inputs, part_module
from models.rife.ifnet import IFNet
from models.rife.spec import get_spec
from models.runtime import OnnxRunner, Runner, TorchRunner
from tests.hashed_weights import hashed_state_dict

ENGINES = ("eager", "torchscript", "onnx")


def engine_params() -> list[object]:
    """Each engine as a pytest param, skipped with a reason where its library is missing."""
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    has_onnx = importlib.util.find_spec("onnx") is not None
    params: list[object] = [pytest.param("eager"), pytest.param("torchscript")]
    reason = "onnxruntime and onnx are needed for the ONNX engine"
    params.append(pytest.param("onnx", marks=pytest.mark.skipif(not (has_ort and has_onnx), reason=reason)))
    return params


def hashed_ifnet(version: str) -> IFNet:
    spec = get_spec(version)
    return load_ifnet(hashed_state_dict(expected_shapes(spec)), spec)


def make_runner(
    net: IFNet, engine: str, repository: Path, *, fp16: bool = False, part: Part = "full"
) -> Runner:
    """The runner of ``engine`` over ``net`` (or one ``part`` of it), exporting into
    ``repository`` as the CLI does."""
    if engine == "eager":
        return TorchRunner(part_module(net, part), "eager")
    spec = get_spec(net.version)
    fmt: Format = "onnx" if engine == "onnx" else "torchscript"
    folder, metadata = export_rife(net, spec, repository, fmt, fp16=fp16, part=part)
    if engine == "onnx":
        return OnnxRunner(folder / metadata.file)
    return TorchRunner.load_torchscript(folder / metadata.file, half_inputs=half_inputs(part) if fp16 else ())
