"""The hashed-weight recipe of shared/conformance (its README): deterministic stand-in
weights for releases whose checkpoints cannot be fetched here. Test-only."""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor


def hashed_tensor(name: str, shape: tuple[int, ...]) -> Tensor:
    """The tensor the recipe gives ``name`` (no ``module.`` prefix) of ``shape``."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("bias"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) * (1 / math.prod(shape[1:])) ** 0.5


def hashed_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    return {name: hashed_tensor(name, shape) for name, shape in shapes.items()}
