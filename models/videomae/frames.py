"""Frames for the clip encoder: sized as its checkpoints were trained (square, 224), and
the tokens to keep when only part of a clip runs."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def fit(frame: np.ndarray, size: int) -> np.ndarray:
    """frame: uint8 H×W×3 → uint8 size×size×3: as it is when it is that size already, else
    its shorter side resized to ``size`` (bilinear), then the centre cropped, as the
    references' evaluation transforms do."""
    height, width = frame.shape[:2]
    if (height, width) == (size, size):
        return frame
    scale = size / min(height, width)
    resized_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
    image = Image.fromarray(frame).resize((resized_hw[1], resized_hw[0]), Image.Resampling.BILINEAR)
    top, left = (resized_hw[0] - size) // 2, (resized_hw[1] - size) // 2
    return np.asarray(image)[top : top + size, left : left + size].copy()


def tube_keep(slices: int, height: int, width: int, ratio: float) -> Tensor:
    """Token indices keeping the same evenly spread ``ratio`` of the spatial positions in
    every time slice: VideoMAE's tube masking, inverted (int64, ascending)."""
    positions = height * width
    count = max(1, round(ratio * positions))
    spatial = torch.linspace(0, positions - 1, count).round().long().unique()
    return (torch.arange(slices)[:, None] * positions + spatial[None]).flatten()
