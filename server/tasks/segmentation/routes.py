"""Segmentation over REST: object controls, and one frame at a time for editors that
cannot hold a websocket. The same controls and the same step as the stream's."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.access import Caller
from server.api.deps import CallerDep, State, read_upload
from server.api.errors import ApiError
from server.media import decode_image
from server.state import ServerState
from server.tasks.segmentation.controls import queue_mask, queue_removal, queue_reset, tracked_after
from server.tasks.segmentation.masks import decode_index_png
from server.tasks.segmentation.session import PendingMask, SegmentationSession
from server.tasks.segmentation.step import encode_answer_async, run_frame
from server.tasks.segmentation.wire import MaskSpec, ObjectId, RleMask, decode_mask

router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["segmentation"])


class MaskRequest(BaseModel):
    """Give, add or correct objects' masks on the next frame."""

    model_config = ConfigDict(extra="forbid")
    mask: MaskSpec
    objects: list[ObjectId] | None = Field(None, description="ids the mask sets (default: all in it)")


async def segmentation_session(state: ServerState, session_id: str, caller: Caller) -> SegmentationSession:
    session = await state.find_session(session_id, caller)
    if not isinstance(session, SegmentationSession):
        raise ApiError(409, "wrong_task", f"session {session_id} is a {session.task} session")
    session.core.touch()
    return session


def queued(session: SegmentationSession, control: str) -> dict[str, object]:
    return {
        "queued": control,
        "applies_to": "the next frame",
        "tracked_after": sorted(tracked_after(session)),
    }


@router.post("/mask", status_code=202, summary="Give, add or correct masks on the next frame")
async def give_mask(session_id: str, body: MaskRequest, state: State, caller: CallerDep) -> dict[str, object]:
    """The body's `mask` is an index PNG (`format: png`), COCO RLEs by id (`rle`) or one PNG
    per id (`binary_png`), at the session's frame size (docs/protocol.md §10); `objects` names
    the ids it sets (default: every id in it), and the other objects keep their prediction
    outside its labelled pixels. It is queued, and applies to the session's next frame.
    Answers 202 with `tracked_after`, the ids tracked once it applies. Errors: 400
    `invalid_mask` (a corrupt PNG, bad base64), `invalid_rle`, `invalid_object_id`,
    `overlapping_masks`, `too_many_objects`; 422 `mask_size_mismatch`, or
    `invalid_argument` when the objects tracked would pass the session's `max_objects`; 409
    `wrong_task` for a session of another task."""
    session = await segmentation_session(state, session_id, caller)
    mask, ids = await asyncio.to_thread(
        decode_mask, body.mask, session.size, state.settings.max_pixels, session.max_objects
    )
    queue_mask(session, mask, body.objects if body.objects is not None else ids)
    return queued(session, "mask")


@router.delete("/objects/{object_id}", status_code=202, summary="Remove an object from the next frame on")
async def remove_object(
    session_id: str, object_id: int, state: State, caller: CallerDep
) -> dict[str, object]:
    """From the session's next frame on, the object is no longer tracked and its memory is
    freed. Answers 202 with `tracked_after`. 422 `invalid_argument` for an id that is not
    tracked, or one a queued mask gives; 409 `wrong_task` for a session of another task."""
    session = await segmentation_session(state, session_id, caller)
    queue_removal(session, object_id)
    return queued(session, "remove_object")


@router.post("/reset", status_code=202, summary="Forget all memory and objects before the next frame")
async def reset(session_id: str, state: State, caller: CallerDep) -> dict[str, object]:
    """Before the session's next frame, every memory (sensory, working, long-term) and every
    object is forgotten, and queued masks and removals are dropped: the next frame needs a
    mask again. Answers 202 with `tracked_after` (empty). 409 `wrong_task` for a session of
    another task."""
    session = await segmentation_session(state, session_id, caller)
    queue_reset(session)
    return queued(session, "reset")


@router.post("/frames", summary="Segment one frame (the session's next)")
async def step_frame(
    session_id: str,
    state: State,
    caller: CallerDep,
    image: Annotated[UploadFile, File(description="the frame: PNG, JPEG or WebP")],
    mask: Annotated[UploadFile | None, File(description="optional index PNG for this frame")] = None,
    rle: Annotated[str | None, Form(description='optional {"id": COCO RLE, ...} for this frame')] = None,
    objects: Annotated[
        str | None, Form(description="ids the mask sets, e.g. 1,3 (default: all in it)")
    ] = None,
) -> dict[str, object]:
    """One step without a websocket: the multipart `image` is the session's next frame, run
    through the same step as the stream's, optionally with its mask (an index PNG `mask`, or
    `rle` JSON by id, and `objects`). Answers the stream's `result` message as JSON, its
    index PNG (or `rles`) and any probability PNGs base64 in `data`. Errors: 400
    `invalid_image`, or a mask refused as on `POST .../mask`; 413 a frame over
    `VIDSERVE_MAX_PIXELS`; 422 `invalid_argument` (a frame before any mask, a frame of
    another size than the session's, `mask` and `rle` together, `objects` without a mask),
    `invalid_rle` (`rle` that is not JSON of RLEs by id), `mask_size_mismatch`; 409
    `wrong_task`; 503 while the server drains."""
    session = await segmentation_session(state, session_id, caller)
    if not state.accepting:  # why: a drain waits for frames in flight; it must not admit more
        raise ApiError(503, "not_ready", "the server is shutting down; the frame was not run")
    started = time.perf_counter()
    core = session.core
    with core.receiving():
        index = core.next_index(None)
        core.take_index(index)  # why before any await: concurrent frames get distinct indices
        try:
            with state.announce(session.model, session.id):
                data = await read_upload(state, image, "image")
                pixels = await asyncio.to_thread(decode_image, data, state.settings.max_pixels)
                size = (pixels.shape[0], pixels.shape[1])
                given = await _given_mask(state, session, mask, rle, objects, size)
                result = await run_frame(state, session, pixels, given)
        except Exception:
            core.frames_failed += 1  # why: the error answers this frame; it is not dropped
            raise
        core.frames_done += 1
        state.after_frame(session)
    message, binaries = await encode_answer_async(session, index, result, started)
    return {**message, "data": [base64.b64encode(b).decode() for b in binaries]}


async def _given_mask(
    state: ServerState,
    session: SegmentationSession,
    mask: UploadFile | None,
    rle: str | None,
    objects: str | None,
    size: tuple[int, int],
) -> PendingMask | None:
    ids = _parse_ids(objects)
    if mask is not None and rle is not None:
        raise ApiError(422, "invalid_argument", "give mask or rle, not both")
    if mask is not None:
        data = await read_upload(state, mask, "mask")
        index_mask = await asyncio.to_thread(decode_index_png, data, size)
        return PendingMask(index_mask, ids)
    if rle is not None:
        try:
            spec = RleMask(format="rle", objects=json.loads(rle))
        # why ValueError: JSON's own errors, and integers of more than 4300 digits; Recursion: deep nesting
        except (ValueError, ValidationError, RecursionError) as exc:
            raise ApiError(
                422, "invalid_rle", f"rle must be a JSON object of COCO RLEs by id: {exc}"
            ) from exc
        index_mask, rle_ids = await asyncio.to_thread(
            decode_mask, spec, size, state.settings.max_pixels, session.max_objects
        )
        return PendingMask(index_mask, ids if ids is not None else rle_ids)
    if ids is not None:
        raise ApiError(422, "invalid_argument", "objects needs a mask or rle")
    return None


def _parse_ids(objects: str | None) -> list[int] | None:
    if objects is None or not objects.strip():
        return None
    try:
        ids = [int(v) if len(v.strip()) <= 3 else -1 for v in objects.split(",")]
    except ValueError as exc:
        raise ApiError(
            422, "invalid_argument", f"objects must be ids like 1,3; got {objects[:40]!r}"
        ) from exc
    if any(not 1 <= i <= 255 for i in ids):
        raise ApiError(422, "invalid_object_id", f"object ids are 1..255, got {ids}")
    return ids
