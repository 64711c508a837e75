"""Loading released XMem checkpoints (``XMem.pth``, ``XMem-s012.pth``, …) unchanged.

A checkpoint is the reference network's plain state dict, possibly saved from
DataParallel (``module.`` prefix). The widths (key, value, hidden) are read off the
tensors as the reference does; then every tensor must be present with its exact shape,
and nothing else may be there, before ``load_state_dict(strict=True)`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from models.rife.checkpoint import CheckpointError, read_state_dict
from models.tensor_check import mismatches
from models.xmem.config import XMemConfig
from models.xmem.network import XMem

__all__ = ["CheckpointError", "check_tensors", "expected_shapes", "infer_config", "load_xmem"]


def expected_shapes(config: XMemConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor of the network (0-d counters as ``()``); built on meta."""
    with torch.device("meta"):
        net = XMem(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def strip_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop DataParallel's ``module.`` prefix."""
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def infer_config(tensors: Mapping[str, Tensor]) -> XMemConfig:
    """The widths the tensors were trained with (defaults where a tensor is missing; the
    shape check then names it)."""
    dims = {}
    if "key_proj.key_proj.weight" in tensors:
        dims["key_dim"] = int(tensors["key_proj.key_proj.weight"].shape[0])
    if "value_encoder.fuser.block2.conv2.weight" in tensors:
        dims["value_dim"] = int(tensors["value_encoder.fuser.block2.conv2.weight"].shape[0])
    if "decoder.hidden_update.transform.weight" in tensors:
        # why // 3: the GRU's one conv gives forget, update and candidate
        dims["hidden_dim"] = int(tensors["decoder.hidden_update.transform.weight"].shape[0]) // 3
    try:
        return XMemConfig().replace(**dims)
    except ValueError as exc:
        raise CheckpointError(f"the checkpoint's widths {dims} are not an XMem network: {exc}") from exc


def check_tensors(tensors: Mapping[str, Tensor], config: XMemConfig, source: str) -> None:
    """Raise ``CheckpointError`` naming every missing, mis-shaped and unexpected tensor."""
    problems = mismatches(tensors, expected_shapes(config))
    if problems:
        dims = f"key_dim {config.key_dim}, value_dim {config.value_dim}, hidden_dim {config.hidden_dim}"
        raise CheckpointError("\n".join([f"{source} does not fit XMem ({dims}):", *problems]))


def load_xmem(source: str | Path | Mapping[str, Tensor]) -> XMem:
    """An eval-mode float32 ``XMem`` with a checkpoint's (file or state dict) weights."""
    name = str(source) if isinstance(source, str | Path) else "state dict"
    state = read_state_dict(source) if isinstance(source, str | Path) else dict(source)
    tensors = strip_prefix(state)
    config = infer_config(tensors)
    check_tensors(tensors, config, name)
    # built on meta and given the checkpoint's tensors: no throw-away random init of 62 M weights
    with torch.device("meta"):
        net = XMem(config)
    # copies (the caller's tensors stay its own); floating ones in float32, counters int64
    owned = {
        k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in tensors.items()
    }
    net.load_state_dict(owned, strict=True, assign=True)
    return net.eval()
