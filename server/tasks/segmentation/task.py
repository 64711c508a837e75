"""Semi-supervised video object segmentation with XMem as a task of the server."""

from __future__ import annotations

from typing import ClassVar

from fastapi import WebSocket
from pydantic import BaseModel

from models.video import VideoInfo
from models.xmem.config import XMemConfigError
from models.xmem.inference_core import SegmentationInputError, XMemState
from server.api.errors import ApiError
from server.api.framing import FrameStream
from server.jobs.store import Job
from server.metrics import Metrics
from server.sessions.store import SessionCore, new_core
from server.state import ServerState
from server.tasks.base import ErrorCode, LoadContext, SavedState, Task
from server.tasks.segmentation import jobs, memory, routes, saved, service
from server.tasks.segmentation.jobs import SegmentationJobForm
from server.tasks.segmentation.masks import MaskError
from server.tasks.segmentation.service import SegmentationService
from server.tasks.segmentation.session import (
    DEFAULT_OBJECTS,
    DEFAULT_SIDE,
    TASK,
    SegmentationSession,
    SegmentationSessionCreate,
)
from server.tasks.segmentation.stream import SegmentationStream


class SegmentationTask(Task[SegmentationSession, SegmentationService]):
    """Object masks on every frame, from masks the user gives on any frame."""

    name: ClassVar[str] = TASK
    title: ClassVar[str] = "segmentation"
    families: ClassVar[tuple[str, ...]] = ("xmem",)
    session_body: ClassVar[type[BaseModel]] = SegmentationSessionCreate
    job_form: ClassVar[type[BaseModel]] = SegmentationJobForm
    errors: ClassVar[tuple[ErrorCode, ...]] = (
        ErrorCode(SegmentationInputError, 422, "invalid_argument"),
        ErrorCode(XMemConfigError, 422, "invalid_argument"),
        ErrorCode(MaskError, 400, "invalid_mask"),  # its own status and code win (masks.py)
    )
    router = routes.router

    def load(self, context: LoadContext) -> SegmentationService:
        return service.load(context)

    async def open_session(
        self, state: ServerState, body: BaseModel, service: SegmentationService
    ) -> SegmentationSession:
        """A session with its own XMem state over the shared engines, its worst case reserved."""
        assert isinstance(body, SegmentationSessionCreate)
        max_objects = body.max_objects or min(DEFAULT_OBJECTS, state.settings.max_objects)
        if max_objects > state.settings.max_objects:
            raise ApiError(
                422,
                "invalid_argument",
                f"max_objects {max_objects} exceeds the server's {state.settings.max_objects}",
            )
        config = body.xmem_config()
        core = new_core()
        # why this guess: the frame size is unknown until the first frame; assume up to 2:1 at the
        # processing size, and settle the exact figure on that frame
        side = body.processing_size or DEFAULT_SIDE
        reserved = service.memory_bound(config, (side, 2 * side), None, max_objects)
        state.budget.reserve(core.id, reserved, memory.BUDGET_HINT)
        return SegmentationSession(
            core=core,
            model=service.model,
            xmem=service.fresh(config),
            processing_size=body.processing_size,
            max_objects=max_objects,
            output_format=body.output_format,
            probabilities=body.probabilities,
            reserved_bytes=reserved,
        )

    def stream(self, state: ServerState, ws: WebSocket, session: SegmentationSession) -> FrameStream:
        return SegmentationStream(state, ws, session)

    async def close_session(self, state: ServerState, session: SegmentationSession) -> None:
        # why now: drop the tensors, not when the last reference goes; a frame still on the
        # engine works on its own copy, and run_frame does not adopt it into a closed session
        session.xmem = XMemState.fresh(session.config)

    async def job_params(
        self, state: ServerState, service: SegmentationService, form: BaseModel, info: VideoInfo, job_id: str
    ) -> object:
        assert isinstance(form, SegmentationJobForm)
        return await jobs.job_params(state, service, form, info, job_id)

    async def run_job(self, state: ServerState, job: Job, service: SegmentationService) -> None:
        await jobs.run_segmentation(state, job, service)

    def save_state(self, session: SegmentationSession) -> SavedState:
        return saved.save_state(session)

    async def restore_session(
        self, state: ServerState, service: SegmentationService, state_: SavedState, core: SessionCore
    ) -> SegmentationSession:
        return saved.restore(state, service, state_, core)

    def checkpoint_mark(self, session: SegmentationSession) -> object:
        # why: memory is written on memory frames only; the frames between them change the
        # sensory memory, which a resumed client's resent frames rebuild
        return session.xmem.last_memory_frame

    def register_metrics(self, metrics: Metrics, state: ServerState) -> None:
        memory.register(metrics, state)
