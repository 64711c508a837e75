"""Frame interpolation with RIFE v4 as a task of the server."""

from __future__ import annotations

from typing import ClassVar

from fastapi import WebSocket
from pydantic import BaseModel

from models.rife.inference import InterpolationInputError
from models.video import VideoInfo
from server.api.errors import ApiError
from server.api.framing import FrameStream
from server.jobs.store import Job
from server.sessions.store import SessionCore, new_core
from server.state import ServerState
from server.tasks.base import ErrorCode, LoadContext, SavedState, Task
from server.tasks.interpolation import jobs, routes, saved, service
from server.tasks.interpolation.forms import InterpolationJobForm
from server.tasks.interpolation.service import InterpolationService, OutputTooLarge
from server.tasks.interpolation.session import TASK, InterpolationSession, InterpolationSessionCreate
from server.tasks.interpolation.stream import InterpolationStream


class InterpolationTask(Task[InterpolationSession, InterpolationService]):
    """In-between frames of consecutive pairs, at any timesteps."""

    name: ClassVar[str] = TASK
    title: ClassVar[str] = "interpolation"
    families: ClassVar[tuple[str, ...]] = ("rife",)
    session_body: ClassVar[type[BaseModel]] = InterpolationSessionCreate
    job_form: ClassVar[type[BaseModel]] = InterpolationJobForm
    errors: ClassVar[tuple[ErrorCode, ...]] = (
        ErrorCode(InterpolationInputError, 422, "invalid_argument"),
        ErrorCode(OutputTooLarge, 413, "output_too_large"),  # its own status and code win
    )
    router = routes.router

    def load(self, context: LoadContext) -> InterpolationService:
        return service.load(context)

    async def open_session(
        self, state: ServerState, body: BaseModel, service: InterpolationService
    ) -> InterpolationSession:
        assert isinstance(body, InterpolationSessionCreate)
        timesteps = body.resolved_timesteps()
        if len(timesteps) > state.settings.max_queue_size:
            raise ApiError(
                422, "too_many_rows", f"{len(timesteps)} timesteps per frame exceed the engine queue of "
                f"{state.settings.max_queue_size} (VIDSERVE_MAX_QUEUE_SIZE)",
            )  # fmt: skip
        return InterpolationSession(
            core=new_core(),
            model=service.model,
            timesteps=timesteps,
            scale=body.scale,
            scene_change_threshold=body.scene_change_threshold,
            output_format=body.output_format,
        )

    def stream(self, state: ServerState, ws: WebSocket, session: InterpolationSession) -> FrameStream:
        return InterpolationStream(state, ws, session)

    def save_state(self, session: InterpolationSession) -> SavedState:
        return saved.save_state(session)

    async def restore_session(
        self, state: ServerState, service: InterpolationService, state_: SavedState, core: SessionCore
    ) -> InterpolationSession:
        return saved.restore(service, state_, core)

    async def job_params(
        self, state: ServerState, service: InterpolationService, form: BaseModel, info: VideoInfo, job_id: str
    ) -> object:
        assert isinstance(form, InterpolationJobForm)
        return jobs.job_params(state.settings, service, form, info)

    async def run_job(self, state: ServerState, job: Job, service: InterpolationService) -> None:
        await jobs.run_interpolation(job, service)
