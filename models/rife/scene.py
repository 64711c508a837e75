"""Scene-change detection, as Practical-RIFE's video script does it.

Interpolating across a cut blends two unrelated shots into a ghost. The reference
compares 32×32 thumbnails of the two frames with SSIM (a 3-D 11-tap Gaussian window,
σ 1.5, across the colour channels too, replicate padding) and, below 0.2, repeats the
earlier frame instead of interpolating.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# why 0.2: the threshold of Practical-RIFE's inference_video.py
DEFAULT_SCENE_CHANGE_THRESHOLD = 0.2
THUMBNAIL = 32  # why: the reference compares 32×32 thumbnails
_WINDOW, _SIGMA = 11, 1.5  # why: the standard SSIM window (Wang et al. 2004)
_C1, _C2 = 0.01**2, 0.03**2  # why: SSIM's stabilisers for values in [0, 1]


def _gaussian_window() -> Tensor:
    """The 11×11×11 window as a conv3d weight: 1×1×11×11×11, summing to 1."""
    x = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-(x**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    window = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return window.float()[None, None]


def _thumbnail(frame: np.ndarray) -> Tensor:
    """frame: uint8 H×W×3 → float32 1×1×3×32×32 in [0, 1] (channels as depth)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(THUMBNAIL, THUMBNAIL), mode="bilinear", align_corners=False)
    return x[:, None]


def thumbnail_ssim(frame0: np.ndarray, frame1: np.ndarray) -> float:
    """SSIM of two uint8 H×W×3 frames on their thumbnails; 1 means identical."""
    a, b = _thumbnail(frame0), _thumbnail(frame1)
    window = _gaussian_window()
    pad = _WINDOW // 2

    def blur(x: Tensor) -> Tensor:
        return F.conv3d(F.pad(x, (pad,) * 6, mode="replicate"), window)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))
    return float(ssim.mean())


def is_scene_change(frame0: np.ndarray, frame1: np.ndarray, threshold: float | None) -> bool:
    """Whether the pair crosses a cut; ``threshold`` None (or 0) turns detection off."""
    if not threshold:
        return False
    return thumbnail_ssim(frame0, frame1) < threshold
