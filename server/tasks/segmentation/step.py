"""The one per-frame step of segmentation, shared by the websocket stream, REST frames and
clip jobs: the session's queued controls applied, one frame run through the scheduler, the
video's new state adopted; and its answer encoded for the wire."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from models.xmem.inference_core import SegmentationInputError
from server.scheduler import Cancelled, Priority
from server.state import ServerState
from server.tasks.segmentation.controls import apply_controls, check_object_count, tracked_after
from server.tasks.segmentation.masks import MaskError, encode_index_png, encode_probability_png, encode_rles
from server.tasks.segmentation.memory import metrics_of, reserve_for_size
from server.tasks.segmentation.service import SegmentationService, Segmented
from server.tasks.segmentation.session import PendingMask, SegmentationSession


async def run_frame(
    state: ServerState,
    session: SegmentationSession,
    pixels: np.ndarray,
    given: PendingMask | None,
    priority: Priority = Priority.LIVE,
) -> Segmented:
    """pixels: uint8 H×W×3 → the frame's masks, with the queued controls applied first.

    ``given`` is a mask brought by the frame itself; it replaces a queued one.
    """
    async with session.lock:  # why: REST and a websocket may both drive a session; one frame at a time
        if session.core.closed.is_set():
            raise Cancelled(f"session {session.id} was closed")
        mask = _mask_for(session, pixels, given)
        # why running(): a frame admitted before a drain finishes
        service = state.running(session.model)
        assert isinstance(service, SegmentationService)
        reserve_for_size(state, service, session, pixels.shape[0], pixels.shape[1])
        apply_controls(session)
        queued = session.pending_mask
        before = session.xmem.memory
        result = await service.step(
            session.id,
            session.xmem,
            pixels,
            mask.mask if mask else None,
            mask.objects if mask else None,
            session.processing_size,
            priority,
            probabilities=session.probabilities,
        )
        if not session.core.closed.is_set():  # why: a closed session's memory stays freed
            session.xmem = result.state
        if session.pending_mask is queued:  # why: a mask queued while this frame ran is kept
            session.pending_mask = None
        session.size = (pixels.shape[0], pixels.shape[1])
        _count_memory_events(state, before.consolidations, before.long_term_removals, result)
        return result


def _mask_for(
    session: SegmentationSession, pixels: np.ndarray, given: PendingMask | None
) -> PendingMask | None:
    """The mask this frame applies (its own, else the queued one), checked against the frame."""
    check_frame_size(session, pixels)
    if given is not None:
        check_object_count(session, given)
    mask = given or session.pending_mask
    if mask is None and not tracked_after(session):
        raise SegmentationInputError("no object yet: the first frame (or one before it) must bring a mask")
    if mask is not None and mask.mask.shape != pixels.shape[:2]:
        raise MaskError("mask_size_mismatch", f"mask is {mask.mask.shape}, the frame is {pixels.shape[:2]}")
    return mask


def check_frame_size(session: SegmentationSession, pixels: np.ndarray) -> None:
    if session.size is not None and pixels.shape[:2] != session.size:
        raise SegmentationInputError(
            f"frame is {pixels.shape[0]}×{pixels.shape[1]} (height×width), the session's frames are "
            f"{session.size[0]}×{session.size[1]}; frames are never resized to fit"
        )


def _count_memory_events(state: ServerState, consolidations: int, removals: int, result: Segmented) -> None:
    memory = result.state.memory
    counters = metrics_of(state)
    counters.consolidations.inc(max(0, memory.consolidations - consolidations))
    counters.long_term_removals.inc(max(0, memory.long_term_removals - removals))


# --- answers ------------------------------------------------------------------------------


def encode_answer(
    session: SegmentationSession, index: int, result: Segmented, started: float
) -> tuple[dict[str, object], list[bytes]]:
    """The result message's fields and the binary messages that follow it, in order."""
    message: dict[str, object] = {
        "type": "result",
        "frame_index": index,
        "objects": result.present,
        "tracked": result.object_ids,
        "is_memory_frame": result.is_memory_frame,
        "format": session.output_format,
    }
    binaries: list[bytes] = []
    if session.output_format == "png":
        binaries.append(encode_index_png(result.index_mask))
    else:
        message["rles"] = encode_rles(result.index_mask, result.object_ids)
    if session.probabilities:
        message["probabilities"] = result.object_ids
        assert result.prob is not None  # asked for by the session
        binaries += [encode_probability_png(np.ascontiguousarray(p)) for p in result.prob[1:]]
    message["bytes"] = [len(b) for b in binaries]  # the binary messages that follow, in order
    message["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return message, binaries


async def encode_answer_async(
    session: SegmentationSession, index: int, result: Segmented, started: float
) -> tuple[dict[str, object], list[bytes]]:
    return await asyncio.to_thread(encode_answer, session, index, result, started)
