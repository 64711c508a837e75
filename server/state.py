"""What the running server holds: settings, metrics, sessions, jobs, the tasks it serves,
and each configured model with its own readiness (as Triton keeps per-model readiness
apart from the server's)."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.access import ANONYMOUS, Caller
from server.jobs.store import JobStore
from server.metrics import Metrics
from server.sessions import MemoryBudget, SessionStore
from server.sessions.persist import Persistence
from server.sessions.store import Session, SessionNotFound
from server.settings import Settings
from server.tasks.base import ModelService, Task


class NotReady(RuntimeError):
    """The model is still loading, failed to load, or the server is shutting down; the
    message says which (and, for a failed model, what to do)."""


class UnknownModel(LookupError):
    """A model this server does not serve (or not for this task)."""


class ModelState(enum.StrEnum):
    LOADING = "loading"  # being fetched, exported or warmed up
    READY = "ready"  # loaded and warm: requests are served
    FAILED = "failed"  # could not be loaded; ``reason`` says why and what to do


@dataclass
class ServedModel:
    """One configured model: its task, its readiness and, once ready, its service."""

    name: str  # registry name
    task: Task[Any, Any]
    state: ModelState = ModelState.LOADING
    reason: str | None = None  # for FAILED: what went wrong and how to mend it
    service: ModelService | None = None  # once READY

    def public(self) -> dict[str, object]:
        """What GET /v1/models shows."""
        return {
            "name": self.name,
            "task": self.task.name,
            "state": self.state.value,
            "reason": self.reason,
            "engines": self.service.engines.describe() if self.service is not None else [],
            "warmup_s": self.service.engines.warmup_s if self.service is not None else None,
        }

    def ready_service(self) -> ModelService:
        if self.service is not None:
            return self.service
        if self.state is ModelState.FAILED:
            raise NotReady(f"model {self.name} failed to load: {self.reason}")
        raise NotReady(f"model {self.name} is still loading; see GET /v1/models/{self.name}")


def task_for(tasks: Sequence[Task[Any, Any]], model: str) -> Task[Any, Any]:
    """The task that serves ``model``'s family."""
    for task in tasks:
        if task.serves(model):
            return task
    raise UnknownModel(
        f"no task of this server serves model {model!r} (VIDSERVE_MODELS); "
        f"its tasks: {[t.name for t in tasks]}"
    )


@dataclass
class ServerState:
    """The one object routes reach through ``request.app.state.server``."""

    settings: Settings
    metrics: Metrics
    sessions: SessionStore
    budget: MemoryBudget  # memory reserved per session and job (each its worst case)
    jobs: JobStore  # clip jobs of this process
    tasks: tuple[Task[Any, Any], ...]  # the tasks this server serves (the registry's)
    models: dict[str, ServedModel] = field(default_factory=dict)  # every configured model, by name
    accepting: bool = True  # False once a drain (SIGTERM) or shutdown begins
    active_streams: int = 0  # websockets attached to a session right now
    stop_deadline: float | None = None  # time.monotonic() by which a drain's stop must be done
    persistence: Persistence | None = None  # the state store, when VIDSERVE_STATE_STORE is set

    def __post_init__(self) -> None:
        for name in self.settings.models:
            self.models[name] = ServedModel(name, task_for(self.tasks, name))

    @property
    def video_routes(self) -> tuple[str, ...]:
        """Paths whose body is a whole video (``Task.video_routes``)."""
        return tuple(path for task in self.tasks for path in task.video_routes)

    @property
    def ready(self) -> bool:
        """Every configured model is ready (the whole server's readiness, for orchestrators)."""
        return all(m.state is ModelState.READY for m in self.models.values())

    @property
    def load_error(self) -> str | None:
        """Why the models that failed to load did, or None."""
        failed = [f"{m.name}: {m.reason}" for m in self.models.values() if m.state is ModelState.FAILED]
        return "; ".join(failed) or None

    def task_named(self, name: str) -> Task[Any, Any]:
        return next(t for t in self.tasks if t.name == name)

    def service(self, model: str | None, task: Task[Any, Any]) -> ModelService:
        """The ready service of ``model`` (default: the task's first configured model)."""
        served = self._served(model, task)
        if not self.accepting:
            raise NotReady("the server is shutting down")
        return served.ready_service()

    def running(self, model: str) -> ModelService:
        """The service of a model that work already admitted runs on: in-flight frames
        finish during a drain, so this does not refuse them."""
        return self.models[model].ready_service()

    def _served(self, model: str | None, task: Task[Any, Any]) -> ServedModel:
        served = [m for m in self.models.values() if m.task is task]
        if model is None:
            if not served:
                raise UnknownModel(
                    f"this server serves no {task.title} model; it serves {self.settings.models}"
                )
            return served[0]
        if model not in self.models:
            raise UnknownModel(f"unknown model {model[:64]!r}; this server serves {self.settings.models}")
        if self.models[model].task is not task:
            raise UnknownModel(f"model {model[:64]!r} is not a {task.title} model")
        return self.models[model]

    def announce(self, model: str, owner: str) -> contextlib.AbstractContextManager[None]:
        """While the block runs, ``owner``'s work for ``model`` is on its way (being decoded):
        its scheduler may hold a batch for it."""
        served = self.models.get(model)
        return _announced(served.service if served is not None else None, owner)

    def session_task(self, session: Session) -> Task[Any, Any]:
        return self.task_named(session.task)

    async def find_session(self, session_id: str, caller: Caller = ANONYMOUS) -> Session:
        """An open session of ``caller``'s: held here, else restored from the state store (if
        there is one), or ``SessionNotFound``/``SessionExpired``/``SessionElsewhere``."""
        try:
            return self.sessions.get(session_id, caller)
        except SessionNotFound:
            if self.persistence is None:
                raise
        return await self.persistence.resume(self, session_id, caller)

    def after_frame(self, session: Session) -> None:
        """One of ``session``'s frames was answered (checkpoints, with a state store)."""
        if self.persistence is not None:
            self.persistence.after_frame(self, session)


@contextlib.contextmanager
def _announced(service: ModelService | None, owner: str) -> Iterator[None]:
    if service is None:
        yield
        return
    service.scheduler.expect(owner)
    try:
        yield
    finally:
        service.scheduler.unexpect(owner)
