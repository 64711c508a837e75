"""Export the clip encoder as its two parts (``network.py``), ``embed`` and ``encode``, to
ONNX or TorchScript, into the model repository (``models/engine_folder.py``), and load them
back behind one interface.

    <repository>/videomae-vit-b-k400/onnx-fp32/{embed,encode}.onnx + metadata.json

Batch, frames, height and width (embed) and batch and tokens (encode) are dynamic axes,
so one engine serves every window length, frame size and ``keep_ratio``. An fp16 export
computes in float16 and keeps its LayerNorms and the attention softmax in float32; frames
go in as uint8 and embeddings and logits come out in float32 either way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from models.engine_folder import ExportPart, FolderInfo, export_folder, load_folder
from models.repository import EngineMetadata, Format, TensorInfo
from models.rife.export import exporter_versions
from models.runtime import CPU_PROVIDERS, EngineKind, ProviderSpec, Runner, TorchRunner
from models.videomae.config import VideoMAEConfig, get_config
from models.videomae.network import VideoViT

PART_NAMES = ("embed", "encode")
# the sample the exporter traces: 2 clips of 4 frames of 32×48, and 2 sets of 5 tokens,
# so no axis is traced at size 1
_SAMPLE_CLIPS, _SAMPLE_FRAMES, _SAMPLE_HW, _SAMPLE_TOKENS = 2, 4, (32, 48), 5


class Embed(nn.Module):
    """frames uint8 B×T×H×W×3 → tokens B×N×D, positions int64 B×N."""

    def __init__(self, net: VideoViT) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.embed(frames)


class Encode(nn.Module):
    """tokens B×K×D, positions int64 B×K → embedding B×D, logits B×classes (float32)."""

    def __init__(self, net: VideoViT) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.encode(tokens, positions)


@dataclass(frozen=True)
class VideoMAEEngines:
    """The two parts of one encoder on one engine kind, and the config they were made from."""

    embed: Runner
    encode: Runner
    config: VideoMAEConfig  # the checkpoint's architecture and head size


def part_modules(net: VideoViT) -> dict[str, nn.Module]:
    return {"embed": Embed(net), "encode": Encode(net)}


def io_info(config: VideoMAEConfig, fp16: bool) -> dict[str, tuple[list[TensorInfo], list[TensorInfo]]]:
    feat = "float16" if fp16 else "float32"
    tokens = TensorInfo("tokens", feat, ["batch", "tokens", config.width])
    positions = TensorInfo("positions", "int64", ["batch", "tokens"])
    return {
        "embed": (
            [TensorInfo("frames", "uint8", ["batch", "frames", "height", "width", 3])],
            [tokens, positions],
        ),
        "encode": (
            [tokens, positions],
            [
                TensorInfo("embedding", "float32", ["batch", config.width]),
                TensorInfo("logits", "float32", ["batch", config.classes]),
            ],
        ),
    }


def sample_inputs(config: VideoMAEConfig, fp16: bool) -> dict[str, tuple[Tensor, ...]]:
    gen = torch.Generator().manual_seed(0)
    height, width = _SAMPLE_HW
    frames = torch.randint(0, 256, (_SAMPLE_CLIPS, _SAMPLE_FRAMES, height, width, 3), generator=gen)
    tokens = torch.rand(_SAMPLE_CLIPS, _SAMPLE_TOKENS, config.width, generator=gen)
    positions = torch.tensor([[0, 3, 7, 9, 11], [1, 2, 4, 8, 10]])
    return {
        "embed": (frames.to(torch.uint8),),
        "encode": (tokens.half() if fp16 else tokens, positions),
    }


def export_videomae(
    net: VideoViT,
    repository: Path,
    fmt: Format,
    *,
    model_name: str,
    fp16: bool = False,
    weights_sha256: str | None = None,
) -> tuple[Path, EngineMetadata]:
    """Write both parts and ``metadata.json``; returns the folder and the metadata."""
    config = net.config
    prepared = copy.deepcopy(net).eval()
    prepared = prepared.half() if fp16 else prepared.float()
    modules = part_modules(prepared)
    infos, samples = io_info(config, fp16), sample_inputs(config, fp16)
    parts = [ExportPart(name, modules[name], samples[name], *infos[name]) for name in PART_NAMES]
    info = FolderInfo(
        model=model_name,
        family="videomae",
        version=config.arch,
        weights_sha256=weights_sha256,
        exporter=exporter_versions(),
        extra={
            "arch": config.arch,
            "classes": config.classes,
            "tubelet": config.tubelet,
            "patch": config.patch,
        },
    )
    return export_folder(repository, fmt, fp16, parts, info)


def load_engines(
    folder: Path,
    kind: EngineKind,
    *,
    providers: Sequence[ProviderSpec] = CPU_PROVIDERS,
    device: torch.device | str = "cpu",
) -> VideoMAEEngines:
    """The two parts an ``export_videomae`` folder holds, as runners of ``kind``."""
    runners, metadata = load_folder(folder, kind, PART_NAMES, providers=providers, device=device)
    config = get_config(str(metadata.extra["arch"])).with_classes(int(metadata.extra["classes"]))
    return VideoMAEEngines(runners["embed"], runners["encode"], config)


def eager_engines(net: VideoViT, *, device: torch.device | str = "cpu") -> VideoMAEEngines:
    """Both parts over ``net`` itself (eager torch, shared weights)."""
    modules = part_modules(net)
    return VideoMAEEngines(
        TorchRunner(modules["embed"], "eager", device=device),
        TorchRunner(modules["encode"], "eager", device=device),
        net.config,
    )
