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
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every model is loaded and warmed; which providers really run",
    response_model=ReadyView,
    responses={503: {"model": ReadyView, "description": "not every model is ready, or draining"}},
)
async def readyz(state: State) -> JSONResponse:
    """The whole server's readiness: 200 only when every configured model is ready (one
    model's own state is at /v1/models/{name})."""
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
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
