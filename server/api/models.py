"""``/v1/models``: every configured model with its own readiness (``loading``, ``ready`` or
``failed`` with a reason that says what to do), its task and its engine parts; as Triton
keeps per-model readiness apart from the server's."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import State
from server.api.views import ModelsView, ModelView
from server.state import UnknownModel

router = APIRouter(prefix="/v1/models", tags=["operations"])


@router.get(
    "", summary="Every configured model: task, state, reason, engine parts", response_model=ModelsView
)
async def list_models(state: State) -> dict[str, object]:
    """Every model of `VIDSERVE_MODELS`, each with its task, its own `state` (`loading`,
    `ready` or `failed`), the `reason` a failed one gives (what is missing and how to fetch or
    mount it), its engine parts and its warm-up time. A ready model is served while another
    is loading or has failed."""
    return {"models": [served.public() for served in state.models.values()]}


@router.get("/{name}", summary="One configured model", response_model=ModelView)
async def get_model(name: str, state: State) -> dict[str, object]:
    """The model `name` as `GET /v1/models` lists it: task, state, reason, engine parts and
    warm-up time. 404 `unknown_model` names the models this server serves."""
    served = state.models.get(name)
    if served is None:
        raise UnknownModel(f"unknown model {name!r}; this server serves {state.settings.models}")
    return served.public()
