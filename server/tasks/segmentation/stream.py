"""The segmentation stream: frames in (a header may bring a mask), one ``result`` per
frame out, and control messages that apply from the next frame on."""

from __future__ import annotations

import asyncio
from typing import Annotated, ClassVar, Literal

from fastapi import WebSocket
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from models.xmem.inference_core import SegmentationInputError
from server.api.framing import FrameHeader, FrameStream
from server.media import decode_image
from server.state import ServerState
from server.tasks.segmentation.controls import queue_mask, queue_removal, queue_reset
from server.tasks.segmentation.masks import MaskError
from server.tasks.segmentation.session import PendingMask, SegmentationSession
from server.tasks.segmentation.step import encode_answer_async, run_frame
from server.tasks.segmentation.wire import MaskSpec, ObjectId, decode_mask


class SegmentFrameHeader(FrameHeader):
    """A frame header that may bring a mask: the frame is segmented with it."""

    mask: MaskSpec | None = None
    objects: list[ObjectId] | None = Field(None, description="ids the mask sets (default: all in it)")


class MaskControl(BaseModel):
    """Give, add or correct objects' masks on the next frame."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["mask"]
    mask: MaskSpec
    objects: list[ObjectId] | None = None


class RemoveObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["remove_object"]
    object_id: ObjectId


class Reset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["reset"]


Control = Annotated[MaskControl | RemoveObject | Reset, Field(discriminator="type")]
CONTROL = TypeAdapter(Control)


class SegmentationStream(FrameStream):
    """Frames in, exactly one result (its mask, objects and timing) per frame out."""

    header_model = SegmentFrameHeader
    client_errors: ClassVar[tuple[type[Exception], ...]] = (
        *FrameStream.client_errors,
        MaskError,
        SegmentationInputError,
    )

    def __init__(self, state: ServerState, ws: WebSocket, session: SegmentationSession) -> None:
        super().__init__(state, ws, session)
        self.segmentation = session

    async def on_control(self, kind: object, message: object) -> None:
        control = CONTROL.validate_python(message)
        session = self.segmentation
        if isinstance(control, MaskControl):
            mask, ids = await asyncio.to_thread(
                decode_mask, control.mask, session.size, self.state.settings.max_pixels, session.max_objects
            )
            queue_mask(session, mask, control.objects if control.objects is not None else ids)
        elif isinstance(control, RemoveObject):
            queue_removal(session, control.object_id)
        else:
            queue_reset(session)
        await self.ws.send_json({"type": "ack", "control": control.type})

    async def process(
        self, index: int, pts: float | None, data: bytes, header: FrameHeader | None, started: float
    ) -> None:
        session = self.segmentation
        pixels = await asyncio.to_thread(decode_image, data, self.state.settings.max_pixels)
        given = None
        if isinstance(header, SegmentFrameHeader) and header.mask is not None:
            mask, ids = await asyncio.to_thread(
                decode_mask,
                header.mask,
                pixels.shape[:2],
                self.state.settings.max_pixels,
                session.max_objects,
            )
            given = PendingMask(mask, header.objects if header.objects is not None else ids)
        result = await run_frame(self.state, session, pixels, given)
        message, binaries = await encode_answer_async(session, index, result, started)
        await self.ws.send_json({**message, "pts": pts})
        for data_out in binaries:
            await self.ws.send_bytes(data_out)
