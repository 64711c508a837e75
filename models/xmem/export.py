"""Export XMem's three engines (``engines.py``) to ONNX or TorchScript, into the model
repository, and load them back behind one interface.

    <repository>/xmem/onnx-fp32/{encode_key,encode_value,segment}.onnx + metadata.json

One ``metadata.json`` describes the folder: its top-level ``file``/``inputs``/``outputs``
are the first engine's (``encode_key``), so tools that read one engine a folder keep
working, and ``extra["engines"]`` lists all three (file, inputs, outputs) in call order.
Frames, rows, height and width are dynamic axes.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.repository import EngineMetadata, Format, TensorInfo, engine_dir, read_metadata, write_metadata
from models.rife.export import exporter_versions
from models.runtime import CPU_PROVIDERS, EngineKind, OnnxRunner, ProviderSpec, Runner, TorchRunner
from models.xmem.config import XMemWidths
from models.xmem.engines import ENGINE_NAMES, engine_modules
from models.xmem.network import STRIDE, XMem

# why 17: as the RIFE engines — every op here is standard by 17, and TensorRT 8.6+ and
# ORT 1.14+ both accept it
ONNX_OPSET = 17
# the reference's one network layout (XMem.pth and XMem-s012.pth share it; weights differ)
NETWORK_VERSION = "1.0"
SUFFIXES: dict[Format, str] = {"onnx": ".onnx", "torchscript": ".ts"}
# the sample batch the exporter traces: 2 frames, 3 object rows (frame 0 has two objects),
# so no axis is traced at size 1 and the row gather is a real gather
_SAMPLE_FRAMES, _SAMPLE_ROWS, _SAMPLE_HW = 2, 3, (64, 96)


@dataclass(frozen=True)
class XMemEngines:
    """The three engines of one network on one engine kind; each runner takes positional
    tensors in the order of ``engines.py``'s table and returns a tuple of tensors."""

    encode_key: Runner
    encode_value: Runner
    segment: Runner
    widths: XMemWidths  # the checkpoint's: every video over these engines uses them

    @property
    def kind(self) -> EngineKind:
        return self.encode_key.kind


def io_info(net: XMem, fp16: bool) -> dict[str, tuple[list[TensorInfo], list[TensorInfo]]]:
    """Engine name → (inputs, outputs), names, dtypes and dynamic axes."""
    feat = "float16" if fp16 else "float32"
    k, v, hd = net.key_dim, net.value_dim, net.hidden_dim

    def at(stride: int) -> list[int | str]:
        return ["height", "width"] if stride == 1 else [f"height/{stride}", f"width/{stride}"]

    def rows(channels: int) -> list[int | str]:
        return ["rows", channels, *at(STRIDE)]

    image = TensorInfo("image", feat, ["frames", 3, *at(1)])
    f16 = TensorInfo("f16", feat, ["frames", 1024, *at(16)])
    f8 = TensorInfo("f8", feat, ["frames", 512, *at(8)])
    f4 = TensorInfo("f4", feat, ["frames", 256, *at(4)])
    frame_index = TensorInfo("frame_index", "int64", ["rows"])
    hidden = TensorInfo("hidden", "float32", rows(hd))
    new_hidden = TensorInfo("new_hidden", "float32", rows(hd))
    return {
        "encode_key": (
            [image],
            [
                TensorInfo("key", "float32", ["frames", k, *at(16)]),
                TensorInfo("shrinkage", "float32", ["frames", 1, *at(16)]),
                TensorInfo("selection", "float32", ["frames", k, *at(16)]),
                f16,
                f8,
                f4,
            ],
        ),
        "encode_value": (
            [
                image,
                f16,
                frame_index,
                hidden,
                TensorInfo("masks", "float32", ["rows", *at(1)]),
                TensorInfo("others", "float32", ["rows", *at(1)]),
            ],
            [TensorInfo("value", "float32", rows(v)), new_hidden],
        ),
        "segment": (
            [f16, f8, f4, frame_index, TensorInfo("readout", "float32", rows(v)), hidden],
            [TensorInfo("logits", "float32", ["rows", *at(1)]), new_hidden],
        ),
    }


def sample_inputs(net: XMem, fp16: bool) -> dict[str, tuple[Tensor, ...]]:
    """Engine name → a traceable batch (random; only shapes and dtypes matter)."""
    feat = torch.float16 if fp16 else torch.float32
    gen = torch.Generator().manual_seed(0)
    frames, n_rows, (height, width) = _SAMPLE_FRAMES, _SAMPLE_ROWS, _SAMPLE_HW
    h, w = height // STRIDE, width // STRIDE

    def rand(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.rand(shape, generator=gen).to(dtype)

    image = rand(frames, 3, height, width, dtype=feat)
    f16 = rand(frames, 1024, h, w, dtype=feat)
    f8 = rand(frames, 512, 2 * h, 2 * w, dtype=feat)
    f4 = rand(frames, 256, 4 * h, 4 * w, dtype=feat)
    frame_index = torch.tensor([0, 0, 1])
    hidden = rand(n_rows, net.hidden_dim, h, w)
    masks, others = rand(n_rows, height, width), rand(n_rows, height, width)
    return {
        "encode_key": (image,),
        "encode_value": (image, f16, frame_index, hidden, masks, others),
        "segment": (f16, f8, f4, frame_index, rand(n_rows, net.value_dim, h, w), hidden),
    }


def half_input_positions(inputs: Sequence[TensorInfo]) -> tuple[int, ...]:
    """Which positional inputs an engine takes in float16 (the runners cast them)."""
    return tuple(i for i, t in enumerate(inputs) if t.dtype == "float16")


def _dynamic_axes(infos: Sequence[TensorInfo]) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in infos}


def _write_onnx(
    module: nn.Module, path: Path, sample: tuple[Tensor, ...], io: tuple[list[TensorInfo], list[TensorInfo]]
) -> None:
    inputs, outputs = io
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter (the assert in Segment), expected
        # why dynamo=False: the torch.export-based exporter needs onnxscript, which is not a
        # dependency; the TorchScript-based one exports this graph with dynamic frames, rows,
        # H and W (the tests run it at other sizes and counts than traced)
        torch.onnx.export(
            module,
            sample,
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[t.name for t in inputs],
            output_names=[t.name for t in outputs],
            dynamic_axes=_dynamic_axes(inputs) | _dynamic_axes(outputs),
        )
    import onnx

    onnx.checker.check_model(str(path))


def _write_torchscript(module: nn.Module, path: Path) -> None:
    torch.jit.script(module).save(str(path))


def _write_engine(
    module: nn.Module,
    target: Path,
    fmt: Format,
    sample: tuple[Tensor, ...],
    io: tuple[list[TensorInfo], list[TensorInfo]],
) -> None:
    """Written under a temporary name, then renamed: a crash leaves no partial engine."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=target.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt == "onnx":
            _write_onnx(module, tmp, sample, io)
        else:
            _write_torchscript(module, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare(net: XMem, fp16: bool) -> XMem:
    net = copy.deepcopy(net).eval()
    return net.half() if fp16 else net.float()


def export_xmem(
    net: XMem,
    repository: Path,
    fmt: Format,
    *,
    fp16: bool = False,
    model_name: str = "xmem",
    weights_sha256: str | None = None,
) -> tuple[Path, EngineMetadata]:
    """Write the three engines and ``metadata.json``; returns the folder and the metadata.

    The old metadata goes first and the new last, so a folder with metadata always holds
    three complete engines of one export.
    """
    folder = engine_dir(repository, model_name, fmt, fp16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").unlink(missing_ok=True)
    prepared = _prepare(net, fp16)
    modules = engine_modules(prepared)
    infos = io_info(net, fp16)
    samples = sample_inputs(net, fp16)
    files = {name: f"{name}{SUFFIXES[fmt]}" for name in ENGINE_NAMES}
    for name in ENGINE_NAMES:
        _write_engine(modules[name], folder / files[name], fmt, samples[name], infos[name])
    first = ENGINE_NAMES[0]
    metadata = EngineMetadata(
        model=model_name,
        family="xmem",
        version=NETWORK_VERSION,
        format=fmt,
        precision="fp16" if fp16 else "fp32",
        file=files[first],
        inputs=infos[first][0],
        outputs=infos[first][1],
        weights_sha256=weights_sha256,
        exporter=exporter_versions(),
        opset=ONNX_OPSET if fmt == "onnx" else None,
        extra={
            "engines": {
                name: {
                    "file": files[name],
                    "inputs": _dicts(infos[name][0]),
                    "outputs": _dicts(infos[name][1]),
                }
                for name in ENGINE_NAMES
            },
            "pad_multiple": STRIDE,
            "dims": {"key_dim": net.key_dim, "value_dim": net.value_dim, "hidden_dim": net.hidden_dim},
        },
    )
    write_metadata(folder, metadata)
    return folder, metadata


def _dicts(infos: Sequence[TensorInfo]) -> list[dict[str, Any]]:
    return [asdict(t) for t in infos]


def engine_infos(metadata: EngineMetadata) -> dict[str, tuple[str, list[TensorInfo], list[TensorInfo]]]:
    """Engine name → (file, inputs, outputs), read back from ``metadata.extra``."""
    listed = metadata.extra.get("engines")
    if not isinstance(listed, dict) or set(listed) != set(ENGINE_NAMES):
        raise ValueError(f"metadata of {metadata.model} does not list the engines {', '.join(ENGINE_NAMES)}")
    return {
        name: (
            str(e["file"]),
            [TensorInfo(**t) for t in e["inputs"]],
            [TensorInfo(**t) for t in e["outputs"]],
        )
        for name, e in listed.items()
    }


def load_engines(
    folder: Path,
    kind: EngineKind,
    *,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> XMemEngines:
    """The three engines an ``export_xmem`` folder holds, as runners of ``kind``."""
    metadata = read_metadata(folder)
    wanted: Format = "onnx" if kind == "onnx" else "torchscript"
    if kind == "eager" or metadata.format != wanted:
        raise ValueError(f"{folder} holds {metadata.format} engines; cannot load them as {kind}")
    runners: dict[str, Runner] = {}
    for name, (file, inputs, _) in engine_infos(metadata).items():
        if kind == "onnx":
            runners[name] = OnnxRunner(folder / file, providers)
        else:
            runners[name] = TorchRunner.load_torchscript(folder / file, half_input_positions(inputs), device)
    return XMemEngines(**runners, widths=XMemWidths(**metadata.extra["dims"]))


def eager_engines(net: XMem, *, device: torch.device | str = "cpu") -> XMemEngines:
    """The three engines over ``net`` itself (eager torch, shared weights)."""
    modules = engine_modules(net)
    runners = {name: TorchRunner(modules[name], "eager", device=device) for name in ENGINE_NAMES}
    return XMemEngines(**runners, widths=XMemWidths(net.key_dim, net.value_dim, net.hidden_dim))
