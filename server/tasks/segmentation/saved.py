"""A segmentation session as saved state and back: its XMem state (``models/xmem/state_io.py``),
its settings, the frame size, and the controls queued for its next frame."""

from __future__ import annotations

import dataclasses

import torch

from models.xmem.state_io import state_from_tensors, state_tensors
from server.sessions.store import SessionCore
from server.state import ServerState
from server.tasks.base import SavedState
from server.tasks.segmentation import memory
from server.tasks.segmentation.service import SegmentationService
from server.tasks.segmentation.session import PendingMask, SegmentationSession

PENDING_MASK = "pending_mask"  # the tensor of a mask queued for the next frame


def save_state(session: SegmentationSession) -> SavedState:
    """The session between frames (call it with no frame running on it, or under its lock)."""
    tensors, xmem = state_tensors(session.xmem)
    pending = session.pending_mask
    if pending is not None:
        tensors = {**tensors, PENDING_MASK: torch.from_numpy(pending.mask)}  # uint8 H×W
    fields = {
        "xmem": xmem,
        "size": list(session.size) if session.size else None,
        "pending_objects": None if pending is None or pending.objects is None else list(pending.objects),
        "pending_removals": list(session.pending_removals),
        "pending_reset": session.pending_reset,
        "reserved_bytes": session.reserved_bytes,
    }
    settings = {
        "processing_size": session.processing_size,
        "max_objects": session.max_objects,
        "output_format": session.output_format,
        "probabilities": session.probabilities,
        **{k: v for k, v in dataclasses.asdict(session.config).items() if k not in WIDTHS},
    }
    return SavedState(tensors, fields, settings)


# why apart: the checkpoint's widths, not settings a user chose
WIDTHS = ("key_dim", "value_dim", "hidden_dim")


def restore(
    state: ServerState, service: SegmentationService, saved: SavedState, core: SessionCore
) -> SegmentationSession:
    """The session again over ``service``, its memory on the service's device and its worst
    case reserved as before (``BudgetExceeded`` when it no longer fits here)."""
    fields, settings = saved.fields, saved.settings
    xmem = state_from_tensors(saved.tensors, fields["xmem"], service.device)
    if service.fresh(xmem.config).config != xmem.config:
        raise ValueError("the saved memory's widths are not this model's")
    pending = None
    if PENDING_MASK in saved.tensors:
        objects = fields["pending_objects"]
        pending = PendingMask(saved.tensors[PENDING_MASK].numpy(), None if objects is None else list(objects))
    reserved = int(fields["reserved_bytes"])
    state.budget.reserve(core.id, reserved, memory.BUDGET_HINT)
    size = fields["size"]
    return SegmentationSession(
        core=core,
        model=service.model,
        xmem=xmem,
        processing_size=settings["processing_size"],
        max_objects=int(settings["max_objects"]),
        output_format=settings["output_format"],
        probabilities=bool(settings["probabilities"]),
        reserved_bytes=reserved,
        size=None if size is None else (int(size[0]), int(size[1])),
        pending_mask=pending,
        pending_removals=[int(obj) for obj in fields["pending_removals"]],
        pending_reset=bool(fields["pending_reset"]),
    )
