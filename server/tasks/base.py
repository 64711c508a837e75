"""The task interface: what the generic server needs from each kind of work it serves.

A task (interpolation, segmentation, ...) is a package under ``server/tasks/`` with one
``Task`` subclass, listed in ``server/tasks/registry.py``. The generic modules (app, state,
routes, framing, errors, metrics, scheduler, engines, stores) only ever go through this
interface; they never name a task's model family. ``docs/architecture.md`` has the
contract in prose and the checklist for adding a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel
from torch import Tensor

from models.weights.registry import get_entry
from server.engines.engine import EngineSet, Observe
from server.scheduler import BatchStats, Scheduler, SchedulerConfig
from server.settings import Settings

if TYPE_CHECKING:
    from models.video import VideoInfo
    from server.api.framing import FrameStream
    from server.jobs.store import Job
    from server.metrics import Metrics
    from server.sessions.store import Session, SessionCore
    from server.state import ServerState


class ModelService(Protocol):
    """One loaded model of a task: its engines and its scheduler, shared by every session."""

    @property
    def model(self) -> str: ...  # registry name

    @property
    def engines(self) -> EngineSet: ...

    @property
    def scheduler(self) -> Scheduler[Any, Any]: ...


@dataclass(frozen=True)
class LoadContext:
    """What a task's loader is given for one model."""

    settings: Settings
    model: str  # registry name of the model to load
    scheduler: SchedulerConfig  # for the model's scheduler
    on_batch: Callable[[BatchStats], None]  # reports each of its batches (metrics)
    observe: Observe  # meters each call of a part, for models of several parts


@dataclass(frozen=True)
class ErrorCode:
    """A client error of a task's and what it answers with (the message is the exception's)."""

    kind: type[Exception]
    status: int  # HTTP status
    code: str  # ``error.code`` in the JSON body, and over the websocket


@dataclass
class SavedState:
    """A session's state as data, taken between frames: what a checkpoint writes and a
    replica restores. Taking it is cheap (the tensors are the session's own, never written
    in place); packing copies them out, off the event loop."""

    tensors: dict[str, Tensor]  # the task's tensors by name, on any device
    fields: dict[str, Any]  # the task's own JSON-able fields: counters, pending controls
    settings: dict[str, Any]  # the session's settings as opened (shown in the header)


S = TypeVar("S", bound="Session")  # the task's session type
M = TypeVar("M", bound=ModelService)  # the task's loaded model


class Task(ABC, Generic[S, M]):
    """One kind of work: its sessions, its per-frame step (shared by stream, REST and jobs,
    inside the package), its controls, memory accounting, client errors, loader and stream."""

    name: ClassVar[str]  # the ``task`` of its sessions and jobs: "interpolate"
    title: ClassVar[str]  # for messages: "interpolation"
    families: ClassVar[tuple[str, ...]]  # registry families whose models it serves
    session_body: ClassVar[type[BaseModel]]  # POST /v1/sessions body; ``task: Literal[name]``
    job_form: ClassVar[type[BaseModel]]  # its fields of POST /v1/jobs (beyond video, task, model)
    errors: ClassVar[tuple[ErrorCode, ...]] = ()  # its client errors
    router: ClassVar[APIRouter | None] = None  # its own REST routes
    # paths of its routes whose body is a whole video: bounded as a job's upload is
    video_routes: ClassVar[tuple[str, ...]] = ()

    def serves(self, model: str) -> bool:
        return get_entry(model).family in self.families

    @abstractmethod
    def load(self, context: LoadContext) -> M:
        """Load (exporting on first start) and warm up one model; blocking, so it runs in a
        worker thread. The scheduler it makes is started by the caller, on the event loop.
        Raises ``EngineError`` with a message that says what to do."""

    @abstractmethod
    async def open_session(self, state: ServerState, body: BaseModel, service: M) -> S:
        """A new session from its validated ``session_body`` (reserving what it needs);
        the caller adds it to the store."""

    @abstractmethod
    def stream(self, state: ServerState, ws: WebSocket, session: S) -> FrameStream:
        """The handler of a websocket attached to one of its sessions."""

    async def close_session(self, state: ServerState, session: S) -> None:
        """Free what a closed session holds, once its queued work is cancelled; by default
        there is nothing beyond the budget, which the caller releases."""

    @abstractmethod
    async def job_params(
        self, state: ServerState, service: M, form: BaseModel, info: VideoInfo, job_id: str
    ) -> object:
        """A clip job's parameters from its ``job_form`` and the video's probe (reserving
        what it needs under ``job_id``); raise ``ApiError`` for a job it cannot run."""

    @abstractmethod
    async def run_job(self, state: ServerState, job: Job, service: M) -> None:
        """Run a clip job to its result (``job.result``, ``job.media_type``)."""

    @abstractmethod
    def save_state(self, session: S) -> SavedState:
        """The session's state now, between frames (``models/*/state_io.py`` for the model's part)."""

    @abstractmethod
    async def restore_session(
        self, state: ServerState, service: M, saved: SavedState, core: SessionCore
    ) -> S:
        """A session from a saved state over ``service`` (reserving what it needs), to go on
        exactly where it was; ``ValueError`` for a state that does not fit."""

    def checkpoint_mark(self, session: S) -> object:
        """What changes when the session's state is written to (``VIDSERVE_CHECKPOINT_EVERY``
        counts its changes): by default, every frame answered."""
        return session.core.frames_done

    def register_metrics(self, metrics: Metrics, state: ServerState) -> None:
        """Add the task's own series to the app's registry (none by default)."""
