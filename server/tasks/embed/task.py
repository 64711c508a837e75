"""The clip encoder (VideoMAE V2) as a task of the server: clip embeddings and Kinetics-400
labels, per window of a stream, a REST clip or a clip job."""

from __future__ import annotations

from typing import ClassVar

from fastapi import WebSocket
from pydantic import BaseModel

from models.video import VideoInfo
from models.videomae.inference import ClipInputError, ClipState
from server.api.framing import FrameStream
from server.jobs.store import Job
from server.sessions.store import SessionCore, new_core
from server.state import ServerState
from server.tasks.base import ErrorCode, LoadContext, SavedState, Task
from server.tasks.embed import jobs, routes, saved, service
from server.tasks.embed.jobs import EmbedJobForm
from server.tasks.embed.service import EmbedService
from server.tasks.embed.session import TASK, EmbedSession, EmbedSessionCreate
from server.tasks.embed.step import new_stream
from server.tasks.embed.stream import EmbedStream

BUDGET_HINT = "or ask for fewer frames_per_clip"


class EmbedTask(Task[EmbedSession, EmbedService]):
    """An embedding and action labels for every window of a clip."""

    name: ClassVar[str] = TASK
    title: ClassVar[str] = "clip encoder"
    families: ClassVar[tuple[str, ...]] = ("videomae",)
    session_body: ClassVar[type[BaseModel]] = EmbedSessionCreate
    job_form: ClassVar[type[BaseModel]] = EmbedJobForm
    errors: ClassVar[tuple[ErrorCode, ...]] = (ErrorCode(ClipInputError, 422, "invalid_argument"),)
    router = routes.router
    video_routes: ClassVar[tuple[str, ...]] = (routes.CLIPS_PATH,)

    def load(self, context: LoadContext) -> EmbedService:
        return service.load(context)

    async def open_session(self, state: ServerState, body: BaseModel, service: EmbedService) -> EmbedSession:
        """A stream with its own token ring over the shared engines, the full ring reserved."""
        assert isinstance(body, EmbedSessionCreate)
        session = new_stream(service, body, new_core())
        state.budget.reserve(session.id, session.reserved_bytes, BUDGET_HINT)
        return session

    def stream(self, state: ServerState, ws: WebSocket, session: EmbedSession) -> FrameStream:
        return EmbedStream(state, ws, session)

    async def close_session(self, state: ServerState, session: EmbedSession) -> None:
        # why now: drop the ring's tensors, not when the last reference goes
        session.clip = ClipState(session.spec)

    def save_state(self, session: EmbedSession) -> SavedState:
        return saved.save_state(session)

    async def restore_session(
        self, state: ServerState, service: EmbedService, state_: SavedState, core: SessionCore
    ) -> EmbedSession:
        return saved.restore(state, service, state_, core)

    async def job_params(
        self, state: ServerState, service: EmbedService, form: BaseModel, info: VideoInfo, job_id: str
    ) -> object:
        assert isinstance(form, EmbedJobForm)
        return await jobs.job_params(state, service, form, info, job_id)

    async def run_job(self, state: ServerState, job: Job, service: EmbedService) -> None:
        await jobs.run_embed(job, service)
