"""A stream's kept frame (``PreparedFrame``: the padded previous frame and its encoder
features) as named tensors and JSON fields, and back, exactly."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from models.rife.inference import PreparedFrame


def frame_tensors(frame: PreparedFrame, prefix: str = "previous") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """frame → (tensors: its pixels uint8 H×W×3, padded float32 1×3×Hp×Wp, features if kept;
    fields: its scale)."""
    tensors = {f"{prefix}.pixels": torch.from_numpy(frame.pixels), f"{prefix}.padded": frame.padded}
    if frame.features is not None:
        tensors[f"{prefix}.features"] = frame.features  # 1×k×Hp×Wp
    return tensors, {"scale": frame.scale}


def frame_from_tensors(
    tensors: dict[str, Tensor],
    fields: dict[str, Any],
    device: torch.device | str = "cpu",
    prefix: str = "previous",
) -> PreparedFrame:
    """The inverse of ``frame_tensors``, the padded frame and features moved to ``device``."""
    pixels = tensors[f"{prefix}.pixels"]
    padded = tensors[f"{prefix}.padded"]
    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or padded.ndim != 4:
        raise ValueError(
            f"a kept frame needs uint8 H×W×3 pixels and a 1×3×Hp×Wp padded frame, got "
            f"{tuple(pixels.shape)} {pixels.dtype} and {tuple(padded.shape)}"
        )
    features = tensors.get(f"{prefix}.features")
    return PreparedFrame(
        pixels.numpy(),
        padded.to(device),
        float(fields["scale"]),
        None if features is None else features.to(device),
    )
