"""What the running server holds: settings, metrics, sessions and the served models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from models.weights.registry import get_entry
from server.jobs.store import JobStore
from server.metrics import Metrics
from server.scheduler import Scheduler
from server.sessions import MemoryBudget, SessionStore
from server.settings import Settings
from server.tasks.interpolation import InterpolationService
from server.tasks.segmentation import SegmentationService


@contextlib.contextmanager
def _announced(scheduler: Scheduler[Any, Any] | None, owner: str) -> Iterator[None]:
    if scheduler is None:
        yield
        return
    scheduler.expect(owner)
    try:
        yield
    finally:
        scheduler.unexpect(owner)


class NotReady(RuntimeError):
    """Engines are still loading (or failed to); the message says which."""


class UnknownModel(LookupError):
    """A model this server does not serve."""


@dataclass
class ServerState:
    """The one object routes reach through ``request.app.state.server``."""

    settings: Settings
    metrics: Metrics
    sessions: SessionStore
    budget: MemoryBudget  # segmentation memory, reserved per session (and per segmentation job)
    jobs: JobStore  # clip jobs of this process
    interpolation: dict[str, InterpolationService] = field(default_factory=dict)  # by model name
    segmentation: dict[str, SegmentationService] = field(default_factory=dict)  # by model name
    ready: bool = False  # every engine loaded and warmed
    load_error: str | None = None  # why loading failed, for /readyz
    accepting: bool = True  # False once a drain (SIGTERM) or shutdown begins
    active_streams: int = 0  # websockets attached to a session right now

    def announce(self, model: str, owner: str) -> contextlib.AbstractContextManager[None]:
        """While the block runs, ``owner``'s work for ``model`` is on its way (being decoded):
        its engine's scheduler may hold a batch for it."""
        scheduler: Scheduler[Any, Any] | None = None
        if model in self.interpolation:
            scheduler = self.interpolation[model].scheduler
        if model in self.segmentation:
            scheduler = self.segmentation[model].scheduler
        return _announced(scheduler, owner)

    def _model(self, model: str | None, family: str, task: str) -> str:
        """``model``, or the first configured model of ``family``; checked to be served."""
        served = [m for m in self.settings.models if get_entry(m).family == family]
        name = model or (served[0] if served else None)
        if name is None:
            raise UnknownModel(f"this server serves no {task} model; it serves {self.settings.models}")
        if name not in self.settings.models:
            raise UnknownModel(f"unknown model {name!r}; this server serves {self.settings.models}")
        if name not in served:
            raise UnknownModel(f"model {name!r} is not a {task} model")
        if not self.accepting:
            raise NotReady("the server is shutting down")
        if not self.ready:
            raise NotReady(self.load_error or "engines are still loading; see /readyz")
        return name

    def interpolation_service(self, model: str | None) -> InterpolationService:
        """The service for ``model`` (default: the first RIFE model), once engines are ready."""
        return self.interpolation[self._model(model, "rife", "interpolation")]

    def segmentation_service(self, model: str | None) -> SegmentationService:
        """The service for ``model`` (default: the first XMem model), once engines are ready."""
        return self.segmentation[self._model(model, "xmem", "segmentation")]
