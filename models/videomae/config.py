"""Hyper-parameters of the fine-tuned VideoMAE / VideoMAE V2 video ViT (Tong et al.,
NeurIPS 2022; Wang et al., CVPR 2023), as OpenGVLab's ``modeling_finetune.py`` and
HuggingFace's ``VideoMAEForVideoClassification`` build it for the released checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Arch = Literal["vit-s", "vit-b"]

# why: ImageNet statistics, which the released checkpoints were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoMAEConfig:
    """One encoder's widths; the clip's frames and size are free (dynamic in the engines)."""

    # the architecture's name, as the registry and the CLI spell it
    arch: Arch
    # channels of each token (D)
    width: int
    # attention heads per block; width / heads channels each
    heads: int
    # transformer blocks
    depth: int = 12
    # why 4: the ViT recipe, hidden width of each block's MLP over the token width
    mlp_ratio: int = 4
    # frames per tubelet: each token covers this many frames (the tubelet's time extent)
    tubelet: int = 2
    # pixels per side of a tubelet's patch
    patch: int = 16
    # why 1e-6: the references' LayerNorm eps (timm's ViT default is 1e-5; VideoMAE sets 1e-6)
    eps: float = 1e-6
    # classes of the head: 400 for Kinetics-400 (a 710-class head is reduced at load)
    classes: int = 400
    # frames the released fine-tuned checkpoints were trained on; longer windows still run
    trained_frames: int = 16
    # frame side the released checkpoints were trained on (224×224)
    trained_size: int = 224

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def with_classes(self, classes: int) -> VideoMAEConfig:
        return replace(self, classes=classes)


ARCHS: dict[str, VideoMAEConfig] = {
    "vit-s": VideoMAEConfig(arch="vit-s", width=384, heads=6),  # ViT-S/16
    "vit-b": VideoMAEConfig(arch="vit-b", width=768, heads=12),  # ViT-B/16
}


def get_config(arch: str) -> VideoMAEConfig:
    if arch not in ARCHS:
        raise ValueError(f"unknown VideoMAE architecture {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch]
