"""The two sampling operations of IFNet, written so that they export.

``resize`` takes its factor as a tensor, so one exported engine serves every ``scale``:
in ONNX it becomes a Resize whose scales are computed from the ``scale`` input.
``warp`` keeps its sampling grid and flow normalisation in float32 whatever the
network's dtype, which is what fp16 needs (ECCV2022-RIFE issues 116 and 188: half
precision grids at 4K land samples up to a pixel off and break the output).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class _Resize(torch.autograd.Function):
    """Bilinear half-pixel resize by a runtime factor; exports as ONNX Resize."""

    @staticmethod
    def forward(ctx: object, x: Tensor, factor: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=float(factor.item()), mode="bilinear", align_corners=False)

    @staticmethod
    def symbolic(g: Any, x: torch.Value, factor: torch.Value) -> torch.Value:
        ones = g.op("Constant", value_t=torch.tensor([1.0, 1.0]))
        factor32 = g.op("Cast", factor, to_i=1)  # why: Resize wants float32 scales in fp16 graphs too
        scales = g.op("Concat", ones, factor32, factor32, axis_i=0)
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op(
            "Resize",
            x,
            roi,
            scales,
            mode_s="linear",
            coordinate_transformation_mode_s="half_pixel",
        )


@torch.jit.unused
def _resize_traced(x: Tensor, factor: Tensor) -> Tensor:
    return _Resize.apply(x, factor)


def resize(x: Tensor, factor: Tensor) -> Tensor:
    """Resize ``x: B×C×H×W`` by ``factor: 1-element float`` (>1 enlarges), as F.interpolate does.

    The output is floor(H·factor)×floor(W·factor), sampled at half-pixel centres with the
    factor itself (not the size ratio), exactly as the reference's ``scale_factor=`` calls.
    """
    if torch.jit.is_scripting():
        return F.interpolate(x, scale_factor=float(factor.item()), mode="bilinear", align_corners=False)
    return _resize_traced(x, factor)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``image: B×C×H×W`` by ``flow: B×2×H×W`` (pixels, x then y).

    Bilinear, border padding, align_corners=True, the flow divided by ((W-1)/2, (H-1)/2):
    the reference's convention. The grid is built and sampled in float32.
    """
    dtype = image.dtype
    flow32 = flow.float()
    height, width = flow.shape[2], flow.shape[3]
    xs = torch.arange(width, device=flow.device, dtype=torch.float32).view(1, 1, width)
    ys = torch.arange(height, device=flow.device, dtype=torch.float32).view(1, height, 1)
    # pixel position + flow, then to [-1, 1] with the reference's (size - 1) / 2 divisor
    grid_x = (xs + flow32[:, 0]) * (2.0 / (width - 1)) - 1.0
    grid_y = (ys + flow32[:, 1]) * (2.0 / (height - 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=3)  # B×H×W×2
    sampled = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.to(dtype)
