"""A segmentation session's controls: masks given, objects removed and resets, queued for
the next frame and applied between frames (never while one runs)."""

from __future__ import annotations

import numpy as np

from models.xmem.inference_core import SegmentationInputError, XMemState
from server.tasks.segmentation.masks import MaskError
from server.tasks.segmentation.session import PendingMask, SegmentationSession


def tracked_after(session: SegmentationSession) -> set[int]:
    """Objects the next frame will track, counting queued controls."""
    if session.pending_reset:
        tracked: set[int] = set()
    else:
        tracked = set(session.xmem.object_ids) - set(session.pending_removals)
    if session.pending_mask is not None:
        tracked |= set(_mask_ids(session.pending_mask))
    return tracked


def _mask_ids(pending: PendingMask) -> list[int]:
    if pending.objects is not None:
        return pending.objects
    return [int(v) for v in np.unique(pending.mask) if v != 0]


def queue_mask(session: SegmentationSession, mask: np.ndarray, objects: list[int] | None) -> None:
    """Give, add or correct objects' masks on the next frame (the others keep predicting)."""
    if session.size is not None and mask.shape != session.size:
        raise MaskError(
            "mask_size_mismatch",
            f"mask is {mask.shape[0]}×{mask.shape[1]} (height×width), the session's frames are "
            f"{session.size[0]}×{session.size[1]}",
        )
    pending = PendingMask(mask, sorted(set(objects)) if objects is not None else None)
    previous, session.pending_mask = session.pending_mask, pending
    count = len(tracked_after(session))
    if count > session.max_objects:
        session.pending_mask = previous
        raise SegmentationInputError(
            f"{count} objects exceed this session's max_objects ({session.max_objects})"
        )


def queue_removal(session: SegmentationSession, object_id: int) -> None:
    if object_id not in tracked_after(session):
        raise SegmentationInputError(
            f"unknown object id {object_id}; tracked: {sorted(tracked_after(session))}"
        )  # fmt: skip
    if session.pending_mask is not None and object_id in _mask_ids(session.pending_mask):
        raise SegmentationInputError(f"object {object_id} is given a mask on the next frame; not removing it")
    session.pending_removals.append(object_id)


def queue_reset(session: SegmentationSession) -> None:
    session.pending_reset = True
    session.pending_removals.clear()
    session.pending_mask = None


def check_object_count(session: SegmentationSession, given: PendingMask) -> None:
    """A mask a frame brings must leave at most ``max_objects`` tracked."""
    queued, session.pending_mask = session.pending_mask, given
    try:
        count = len(tracked_after(session))
    finally:
        session.pending_mask = queued
    if count > session.max_objects:
        raise SegmentationInputError(
            f"{count} objects exceed this session's max_objects ({session.max_objects})"
        )


def apply_controls(session: SegmentationSession) -> None:
    """Queued reset and removals, between this session's frames."""
    if session.pending_reset:
        session.xmem = XMemState.fresh(session.config)
        session.pending_reset = False
    for object_id in session.pending_removals:
        # why the check: the removal may have been accepted for an object whose first frame was
        # then refused or failed (no trace of it is kept); removing an unknown id would fail
        # every later frame
        if object_id in session.xmem.object_ids:
            session.xmem = session.xmem.without_object(object_id)
    session.pending_removals.clear()
