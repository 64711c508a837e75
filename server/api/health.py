"""Liveness, readiness with the providers that really run, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.deps import State
from server.api.views import HealthView, ReadyView

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive", response_model=HealthView)
async def healthz() -> dict[str, str]:
    """Liveness: `{"status": "ok"}` as soon as the process answers HTTP, whether its models
    are loaded or not, and while it drains. Readiness is `/readyz`. Needs no API key."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every model is loaded and warmed; which providers really run",
    response_model=ReadyView,
    responses={503: {"model": ReadyView, "description": "not every model is ready, or draining"}},
)
async def readyz(state: State) -> JSONResponse:
    """The whole server's readiness: 200 only when every configured model is ready (one
    model's own state is at `/v1/models/{name}`).

    503, with the same body, while a model is loading, when one failed to load (`error` says
    why) or while the server drains (`draining: true`). `engines` lists every engine part of
    every model with the execution providers that really run it; `fell_back` is true where a
    requested provider failed to load and another runs instead. Needs no API key."""
    engines = [
        part
        for served in state.models.values()
        if served.service is not None
        for part in served.service.engines.describe()
    ]
    body = {
        "ready": state.ready and state.accepting,
        "draining": not state.accepting,
        "error": state.load_error,
        "models": state.settings.models,
        "engines": engines,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> Response:
    """Prometheus text exposition: requests by task and outcome, frames by outcome, queue
    depth, batch sizes, engine calls, failures and their durations, open sessions by task,
    jobs by state, and `vidserve_engine_info` naming each engine part's backend and
    providers. Needs no API key."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
