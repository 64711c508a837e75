"""What the running server holds: settings, metrics, sessions and the served models."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.metrics import Metrics
from server.sessions import SessionStore
from server.settings import Settings
from server.tasks.interpolation import InterpolationService


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
    interpolation: dict[str, InterpolationService] = field(default_factory=dict)  # by model name
    ready: bool = False  # every engine loaded and warmed
    load_error: str | None = None  # why loading failed, for /readyz
    accepting: bool = True  # False once shutdown begins

    @property
    def default_model(self) -> str:
        return self.settings.models[0]

    def interpolation_service(self, model: str | None) -> InterpolationService:
        """The service for ``model`` (default: the first configured), once engines are ready."""
        name = model or self.default_model
        if name not in self.settings.models:
            raise UnknownModel(f"unknown model {name!r}; this server serves {self.settings.models}")
        if not self.ready:
            raise NotReady(self.load_error or "engines are still loading; see /readyz")
        service = self.interpolation.get(name)
        if service is None:
            raise UnknownModel(f"model {name!r} is not an interpolation model")
        return service
