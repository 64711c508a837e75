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


def xmem_hashed_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The XMem recipe (shared/conformance/xmem/README.md): as ``hashed_tensor``, plus
    BatchNorm running statistics and batch counters."""
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=dtype)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if name.endswith("running_var"):
        return 1 + 0.1 * torch.rand(shape, generator=g)
    return hashed_tensor(name, shape)


def xmem_hashed_state_dict(
    shapes_with_dtypes: dict[str, tuple[tuple[int, ...], torch.dtype]],
) -> dict[str, Tensor]:
    """name → (shape, dtype), as the state-dict TSV lists them → the recipe's tensors."""
    return {
        name: xmem_hashed_tensor(name, shape, dtype) for name, (shape, dtype) in shapes_with_dtypes.items()
    }
