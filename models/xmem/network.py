"""XMem, the network (Cheng & Schwing, "XMem: Long-Term Video Object Segmentation with an
Atkinson-Shiffrin Memory Model", ECCV 2022), with the reference's method shapes.

Four sub-networks, named as the released ``XMem.pth`` names them: ``key_encoder``
(ResNet-50), ``key_proj``, ``value_encoder`` (ResNet-18 on image + masks) and ``decoder``.
The memory (working, long-term, sensory) lives outside, in the memory core; it calls
these methods, or the exported engines (``engines.py``) that wrap the same sub-networks.

Images are normalised with ImageNet statistics and padded to multiples of 16 (h = H/16).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.xmem.config import XMemConfig
from models.xmem.modules import F16_DIM, Decoder, KeyEncoder, KeyProjection, ValueEncoder, aggregate

__all__ = ["STRIDE", "XMem", "aggregate", "normalize", "object_rows", "others_of"]

# why: the ImageNet statistics the ResNet encoders were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# why: f16 is the coarsest feature map; padded frames must be multiples of it
STRIDE = 16


def normalize(image: Tensor) -> Tensor:
    """RGB in [0, 1], …×3×H×W → the network's input (ImageNet mean and std)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std


def others_of(masks: Tensor) -> Tensor:
    """For each object, the sum of the other objects' masks: B×N×H×W → B×N×H×W.

    Zeros with one object, as the reference. Computed as total minus own, which equals the
    reference's sum over the others exactly for hard masks and to rounding for soft ones.
    """
    return masks.sum(dim=1, keepdim=True) - masks


def object_rows(batch: int, objects: int, device: torch.device) -> Tensor:
    """frame_index of the row layout for B frames of N objects each: [0]*N + [1]*N + …, int64 B·N."""
    return torch.arange(batch, device=device).repeat_interleave(objects)


class XMem(nn.Module):
    """The network; state dict = the released checkpoints' (see ``checkpoint.py``)."""

    def __init__(self, config: XMemConfig | None = None) -> None:
        super().__init__()
        config = config or XMemConfig()
        self.key_dim = config.key_dim
        self.value_dim = config.value_dim
        self.hidden_dim = config.hidden_dim
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder(config.value_dim, config.hidden_dim)
        self.key_proj = KeyProjection(F16_DIM, config.key_dim)
        self.decoder = Decoder(config.value_dim, config.hidden_dim)

    def encode_key(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """image B×3×H×W → key B×k×h×w, shrinkage B×1×h×w, selection B×k×h×w,
        f16 B×1024×h×w, f8 B×512×2h×2w, f4 B×256×4h×4w."""
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16)
        return key, shrinkage, selection, f16, f8, f4

    def encode_value(
        self, image: Tensor, f16: Tensor, hidden: Tensor, masks: Tensor, is_deep_update: bool = True
    ) -> tuple[Tensor, Tensor]:
        """image B×3×H×W, f16 B×1024×h×w, hidden B×N×k×h×w, masks B×N×H×W →
        value B×N×value_dim×h×w, hidden B×N×k×h×w (deep-updated, or as given)."""
        batch, objects = masks.shape[:2]
        rows = object_rows(batch, objects, masks.device)
        value, new_hidden = self.value_encoder(
            image,
            f16,
            rows,
            hidden.flatten(0, 1),
            masks.flatten(0, 1),
            others_of(masks).flatten(0, 1),
            is_deep_update,
        )
        return value.unflatten(0, (batch, objects)), new_hidden.unflatten(0, (batch, objects))

    def segment(
        self, f16: Tensor, f8: Tensor, f4: Tensor, readout: Tensor, hidden: Tensor, h_out: bool = True
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """Features of B frames, readout B×N×value_dim×h×w, hidden B×N×k×h×w →
        (hidden B×N×k×h×w or None, logits B×(N+1)×H×W, prob B×(N+1)×H×W), background first."""
        batch, objects = readout.shape[:2]
        rows = object_rows(batch, objects, readout.device)
        new_hidden, logits = self.decoder(
            f16, f8, f4, rows, readout.flatten(0, 1), hidden.flatten(0, 1), h_out
        )  # logits: B·N×H×W
        prob = torch.sigmoid(logits.unflatten(0, (batch, objects)))  # B×N×H×W
        agg_logits, agg_prob = aggregate(prob, dim=1)
        if new_hidden is not None:
            new_hidden = new_hidden.unflatten(0, (batch, objects))
        return new_hidden, agg_logits, agg_prob
