"""Export IFNet to ONNX or TorchScript, into the model repository.

One engine per release serves every batch size, frame size, timestep and ``scale``:
batch, height and width are dynamic axes, the timestep is a per-pair input and the
scale a runtime input (see ``ops.resize``). The fp16 variant keeps the warp's grid and
flow normalisation in float32 (``ops.warp``), and takes its timestep and scale in float32.

Releases with a feature encoder (4.22+) also export as two parts, the encoder and the flow
network that takes its features (``Part``), each in a folder of its own: the server encodes
each frame of a stream once and keeps its features.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from models.engine_folder import ONNX_OPSET  # why 17 there: GridSample 16, Resize 13+
from models.repository import ENGINE_FILES, EngineMetadata, Format, TensorInfo, engine_dir, write_metadata
from models.rife.ifnet import FeatureEncoder, FlowFromFeatures, IFNet
from models.rife.spec import SCALES, RifeSpec
from models.runtime import COMPILE_LOCK

Part = Literal["full", "encoder", "flow"]  # the whole network, or its two halves (4.22+)


def part_model(model: str, part: Part) -> str:
    """The repository name of one part: ``rife-4.25``, ``rife-4.25.encoder``, ``rife-4.25.flow``."""
    return model if part == "full" else f"{model}.{part}"


def half_inputs(part: Part) -> tuple[int, ...]:
    """Input positions a TorchScript fp16 engine takes in half precision (images, features)."""
    return {"full": (0, 1), "encoder": (0,), "flow": (0, 1, 2, 3)}[part]


def _sample_inputs(spec: RifeSpec, fp16: bool, part: Part) -> tuple[Tensor, ...]:
    """A batch of two 128×128 pairs: big enough for the coarsest block of any release."""
    dtype = torch.float16 if fp16 else torch.float32
    gen = torch.Generator().manual_seed(0)
    img0 = torch.rand(2, 3, 128, 128, generator=gen).to(dtype)
    img1 = torch.rand(2, 3, 128, 128, generator=gen).to(dtype)
    timestep, scale = torch.tensor([0.25, 0.5]), torch.tensor([1.0])
    if part == "encoder":
        return (img0,)
    if part == "flow":
        f0 = torch.rand(2, spec.encoder_channels, 128, 128, generator=gen).to(dtype)
        f1 = torch.rand(2, spec.encoder_channels, 128, 128, generator=gen).to(dtype)
        return img0, img1, f0, f1, timestep, scale
    return img0, img1, timestep, scale


def io_info(fp16: bool, part: Part = "full", channels: int = 0) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of one part; ``channels``: the encoder's feature channels (k)."""
    image = "float16" if fp16 else "float32"
    dims: list[int | str] = ["batch", 3, "height", "width"]
    feature_dims: list[int | str] = ["batch", channels, "height", "width"]
    if part == "encoder":
        return [TensorInfo("image", image, dims)], [TensorInfo("features", image, feature_dims)]
    features = [TensorInfo("f0", image, feature_dims), TensorInfo("f1", image, feature_dims)]
    inputs = [
        TensorInfo("img0", image, dims),
        TensorInfo("img1", image, dims),
        *(features if part == "flow" else []),
        TensorInfo("timestep", "float32", ["batch"]),
        TensorInfo("scale", "float32", [1]),
    ]
    outputs = [TensorInfo("frame", image, dims), TensorInfo("big_motion", "bool", ["batch"])]
    return inputs, outputs


def _dynamic_axes(infos: list[TensorInfo]) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in infos}


def part_module(net: IFNet, part: Part) -> nn.Module:
    """The module one part exports (the network itself for ``full``)."""
    if part == "encoder":
        return FeatureEncoder(net)
    if part == "flow":
        return FlowFromFeatures(net)
    return net


def _prepare(net: IFNet, fp16: bool) -> IFNet:
    net = copy.deepcopy(net).eval()
    return net.half() if fp16 else net.float()


def _write_onnx(net: IFNet, spec: RifeSpec, path: Path, fp16: bool, part: Part) -> None:
    inputs, outputs = io_info(fp16, part, spec.encoder_channels)
    axes = _dynamic_axes([t for t in inputs + outputs if t.name != "scale"])
    with COMPILE_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about .item() in resize, expected
        # why dynamo=False: the torch.export exporter cannot take a runtime resize factor
        torch.onnx.export(
            part_module(net, part),
            _sample_inputs(spec, fp16, part),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[t.name for t in inputs],
            output_names=[t.name for t in outputs],
            dynamic_axes=axes,
        )
    import onnx

    onnx.checker.check_model(str(path))


def _write_torchscript(net: IFNet, path: Path, part: Part) -> None:
    with COMPILE_LOCK:
        scripted = torch.jit.script(part_module(net, part))
    scripted.save(str(path))


def exporter_versions() -> dict[str, str]:
    versions = {"torch": str(torch.__version__)}
    for name in ("onnx", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            continue
    return versions


def export_rife(
    net: IFNet,
    spec: RifeSpec,
    repository: Path,
    fmt: Format,
    *,
    fp16: bool = False,
    model_name: str | None = None,
    weights_sha256: str | None = None,
    part: Part = "full",
) -> tuple[Path, EngineMetadata]:
    """Write ``model.onnx`` / ``model.ts`` and ``metadata.json``; returns the folder.

    The engine is written under a temporary name and renamed; the metadata goes last,
    so a folder with metadata always holds a complete engine.
    """
    if part != "full" and not spec.encoder_channels:
        raise ValueError(f"RIFE {spec.version} has no feature encoder to split off")
    model = part_model(model_name or f"rife-{spec.version}", part)
    folder = engine_dir(repository, model, fmt, fp16)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / ENGINE_FILES[fmt]
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".export-", suffix=target.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        prepared = _prepare(net, fp16)
        if fmt == "onnx":
            _write_onnx(prepared, spec, tmp, fp16, part)
        else:
            _write_torchscript(prepared, tmp, part)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    inputs, outputs = io_info(fp16, part, spec.encoder_channels)
    metadata = EngineMetadata(
        model=model,
        family="rife",
        version=spec.version,
        format=fmt,
        precision="fp16" if fp16 else "fp32",
        file=target.name,
        inputs=inputs,
        outputs=outputs,
        weights_sha256=weights_sha256,
        exporter=exporter_versions(),
        opset=ONNX_OPSET if fmt == "onnx" else None,
        extra={"pad_multiple": spec.pad_multiple, "scales": list(SCALES), "part": part},
    )
    write_metadata(folder, metadata)
    return folder, metadata
