"""What a segmentation session does, whichever way it is driven (websocket or REST):
masks parsed from their wire formats, controls queued for the next frame, one frame run,
and its answer encoded."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.xmem.inference_core import SegmentationInputError, XMemState
from server.masks import (
    MaskError,
    check_mask_pixels,
    decode_binary_png,
    decode_index_png,
    decode_rle,
    encode_index_png,
    encode_probability_png,
    encode_rles,
    merge_objects,
)
from server.scheduler import Cancelled
from server.sessions import PendingMask, SegmentationSession
from server.state import ServerState
from server.tasks.segmentation import Segmented

ObjectId = Annotated[int, Field(ge=1, le=255)]


class IndexPngMask(BaseModel):
    """One palette or grayscale PNG whose pixel values are object ids."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["png"]
    data: str = Field(description="the PNG file, base64")


class RleMask(BaseModel):
    """COCO RLE per object (compressed string or uncompressed counts)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["rle"]
    objects: dict[str, dict[str, Any]] = Field(description='{"3": {"size": [h, w], "counts": ...}}')


class BinaryPngMask(BaseModel):
    """One binary PNG per object (nonzero = the object)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["binary_png"]
    objects: dict[str, str] = Field(description='{"3": "<base64 PNG>"}')


MaskSpec = Annotated[IndexPngMask | RleMask | BinaryPngMask, Field(discriminator="format")]


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MaskError("invalid_mask", f"{what} is not valid base64: {exc}") from exc


def _object_id(key: str) -> int:
    if not key.isdigit() or not 1 <= int(key) <= 255:
        raise MaskError("invalid_object_id", f"object ids are 1..255, got {key!r}")
    return int(key)


def decode_mask(
    spec: IndexPngMask | RleMask | BinaryPngMask,
    size: tuple[int, int] | None,
    max_pixels: int,
    max_objects: int,
) -> tuple[np.ndarray, list[int] | None]:
    """A wire mask → (uint8 H×W ids, the ids it sets: None for "every id present").

    ``size``: the session's frame size; before its first frame (None) the mask's own size
    is trusted only up to ``max_pixels``, so a small message cannot ask for a huge array; and
    no more objects than the session tracks are decoded."""
    if isinstance(spec, IndexPngMask):
        return decode_index_png(_b64(spec.data, "mask data"), size, max_pixels), None
    if len(spec.objects) > max_objects:
        raise MaskError(
            "too_many_objects",
            f"the mask names {len(spec.objects)} objects; the session tracks at most {max_objects}",
        )
    if isinstance(spec, RleMask):
        masks = {}
        for key, rle in spec.objects.items():
            rle_size = size or _declared_size(rle, max_pixels)
            masks[_object_id(key)] = decode_rle(rle, rle_size)
    else:
        masks = {
            _object_id(k): decode_binary_png(_b64(v, f"object {k}"), size, max_pixels)
            for k, v in spec.objects.items()
        }
    if not masks:
        raise MaskError("invalid_mask", "the mask names no objects")
    shape = next(iter(masks.values())).shape
    return merge_objects(masks, (int(shape[0]), int(shape[1]))), sorted(masks)


def _declared_size(rle: dict[str, Any], max_pixels: int) -> tuple[int, int]:
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise MaskError("invalid_rle", f"RLE size must be [height, width], got {size!r}")
    check_mask_pixels((int(size[0]), int(size[1])), max_pixels, "the RLE mask")
    return int(size[0]), int(size[1])


# --- controls, applied from the next frame on ----------------------------------------------


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


# --- one frame ----------------------------------------------------------------------------


async def run_frame(
    state: ServerState, session: SegmentationSession, pixels: np.ndarray, given: PendingMask | None
) -> Segmented:
    """pixels: uint8 H×W×3 → the frame's masks, with the queued controls applied first.

    ``given`` is a mask brought by the frame itself; it replaces a queued one.
    """
    async with session.lock:
        if session.core.closed.is_set():
            raise Cancelled(f"session {session.id} was closed")
        check_frame_size(session, pixels)
        if given is not None:
            check_object_count(session, given)
        mask = given or session.pending_mask
        if mask is None and not tracked_after(session):
            raise SegmentationInputError(
                "no object yet: the first frame (or one before it) must bring a mask"
            )
        if mask is not None and mask.mask.shape != pixels.shape[:2]:
            raise MaskError(
                "mask_size_mismatch", f"mask is {mask.mask.shape}, the frame is {pixels.shape[:2]}"
            )
        reserve_for_size(state, session, pixels.shape[0], pixels.shape[1])
        apply_controls(session)
        queued = session.pending_mask
        before = (session.xmem.memory.consolidations, session.xmem.memory.long_term_removals)
        # why not segmentation_service(): it refuses new work during a drain, and this frame
        # was admitted before it; in-flight frames finish
        service = state.segmentation[session.model]
        result = await service.step(
            session.id,
            session.xmem,
            pixels,
            mask.mask if mask else None,
            mask.objects if mask else None,
            session.processing_size,
        )
        if not session.core.closed.is_set():  # why: a closed session's memory stays freed
            session.xmem = result.state
        if session.pending_mask is queued:  # why: a mask queued while this frame ran is kept
            session.pending_mask = None
        session.size = (pixels.shape[0], pixels.shape[1])
        memory = session.xmem.memory
        state.metrics.consolidations.inc(memory.consolidations - before[0])
        state.metrics.long_term_removals.inc(memory.long_term_removals - before[1])
        return result


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


def check_frame_size(session: SegmentationSession, pixels: np.ndarray) -> None:
    if session.size is not None and pixels.shape[:2] != session.size:
        raise SegmentationInputError(
            f"frame is {pixels.shape[0]}×{pixels.shape[1]} (height×width), the session's frames are "
            f"{session.size[0]}×{session.size[1]}; frames are never resized to fit"
        )


def reserve_for_size(state: ServerState, session: SegmentationSession, height: int, width: int) -> None:
    """Once the frame size is known, hold exactly the session's worst case."""
    if session.size is not None:
        return
    service = state.segmentation[session.model]
    bound = service.memory_bound(
        session.config, (height, width), session.processing_size, session.max_objects
    )
    state.budget.reserve(session.id, bound)
    session.reserved_bytes = bound


def apply_controls(session: SegmentationSession) -> None:
    """Queued reset and removals, between this session's frames."""
    if session.pending_reset:
        session.xmem = XMemState.fresh(session.config)
        session.pending_reset = False
    for object_id in session.pending_removals:
        # why the check: the removal may have been accepted for an object whose first frame was
        # then rolled back (its batch failed); removing an unknown id would fail every frame
        if object_id in session.xmem.object_ids:
            session.xmem = session.xmem.without_object(object_id)
    session.pending_removals.clear()


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
        binaries += [encode_probability_png(np.ascontiguousarray(p)) for p in result.prob[1:]]
    message["bytes"] = [len(b) for b in binaries]  # the binary messages that follow, in order
    message["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return message, binaries


async def encode_answer_async(
    session: SegmentationSession, index: int, result: Segmented, started: float
) -> tuple[dict[str, object], list[bytes]]:
    return await asyncio.to_thread(encode_answer, session, index, result, started)
