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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models.engine_folder import ExportPart, FolderInfo, export_folder, load_folder
from models.repository import EngineMetadata, Format, TensorInfo
from models.rife.export import exporter_versions
from models.runtime import CPU_PROVIDERS, EngineKind, ProviderSpec, Runner, TorchRunner
from models.xmem.config import XMemWidths
from models.xmem.engines import ENGINE_NAMES, engine_modules
from models.xmem.network import STRIDE, XMem

# the reference's one network layout (XMem.pth and XMem-s012.pth share it; weights differ)
NETWORK_VERSION = "1.0"
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
    prepared = _prepare(net, fp16)
    modules = engine_modules(prepared)
    infos = io_info(net, fp16)
    samples = sample_inputs(net, fp16)
    parts = [ExportPart(name, modules[name], samples[name], *infos[name]) for name in ENGINE_NAMES]
    info = FolderInfo(
        model=model_name,
        family="xmem",
        version=NETWORK_VERSION,
        weights_sha256=weights_sha256,
        exporter=exporter_versions(),
        extra={
            "pad_multiple": STRIDE,
            "dims": {"key_dim": net.key_dim, "value_dim": net.value_dim, "hidden_dim": net.hidden_dim},
        },
    )
    return export_folder(repository, fmt, fp16, parts, info)


def load_engines(
    folder: Path,
    kind: EngineKind,
    *,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> XMemEngines:
    """The three engines an ``export_xmem`` folder holds, as runners of ``kind``."""
    runners, metadata = load_folder(folder, kind, ENGINE_NAMES, providers=providers, device=device)
    return XMemEngines(**runners, widths=XMemWidths(**metadata.extra["dims"]))


def eager_engines(net: XMem, *, device: torch.device | str = "cpu") -> XMemEngines:
    """The three engines over ``net`` itself (eager torch, shared weights)."""
    modules = engine_modules(net)
    runners = {name: TorchRunner(modules[name], "eager", device=device) for name in ENGINE_NAMES}
    return XMemEngines(**runners, widths=XMemWidths(net.key_dim, net.value_dim, net.hidden_dim))
