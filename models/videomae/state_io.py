"""A stream's ring of tubelet tokens (``ClipState``) as named tensors and JSON fields, and
back, exactly: the window spec, the frame counters, the sampled frame waiting for its pair,
the last slice's frames and every slice in the ring."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import torch
from torch import Tensor

from models.videomae.inference import ClipState, SampledFrame, Slice, WindowSpec


def clip_tensors(state: ClipState) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """state → (tensors, JSON-able fields); tensors are the state's own, the caller copies."""
    tensors: dict[str, Tensor] = {}
    if state.pending is not None:
        tensors["pending.pixels"] = torch.from_numpy(state.pending.pixels)  # uint8 s×s×3
    if state.previous_pair is not None:
        tensors["previous_pair"] = torch.from_numpy(state.previous_pair)  # uint8 2×s×s×3
    for i, piece in enumerate(state.ring):
        tensors[f"ring.{i}.tokens"] = piece.tokens  # S×D
        tensors[f"ring.{i}.change"] = piece.change  # S
    fields = {
        "spec": dataclasses.asdict(state.spec),
        "accepted": state.accepted,
        "pending": None if state.pending is None else [state.pending.index, state.pending.pts],
        "ring": [[piece.first_index, piece.first_pts] for piece in state.ring],
        "slices": state.slices,
        "windows": state.windows,
    }
    return tensors, fields


def clip_from_tensors(
    tensors: dict[str, Tensor], fields: dict[str, Any], device: torch.device | str = "cpu"
) -> ClipState:
    """The inverse of ``clip_tensors``, the tokens moved to ``device``."""
    pending = None
    if fields["pending"] is not None:
        index, pts = fields["pending"]
        pending = SampledFrame(tensors["pending.pixels"].numpy(), int(index), pts)
    previous = tensors.get("previous_pair")
    ring = deque(
        Slice(tensors[f"ring.{i}.tokens"].to(device), tensors[f"ring.{i}.change"].to(device), int(index), pts)
        for i, (index, pts) in enumerate(fields["ring"])
    )
    return ClipState(
        spec=WindowSpec(**fields["spec"]),
        accepted=int(fields["accepted"]),
        pending=pending,
        previous_pair=None if previous is None else previous.numpy(),
        ring=ring,
        slices=int(fields["slices"]),
        windows=int(fields["windows"]),
    )
