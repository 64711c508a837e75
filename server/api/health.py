"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.deps import State
from server.engines import describe_runner

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Engines are loaded and warmed; which providers really run")
async def readyz(state: State) -> JSONResponse:
    engines = [service.engine.describe() for service in state.interpolation.values()]
    engines += [
        {"model": model, **describe_runner(service.engines.encode_key), "warm": True}
        for model, service in state.segmentation.items()
    ]
    body = {
        "ready": state.ready and state.accepting,
        "draining": not state.accepting,
        "error": state.load_error,
        "models": state.settings.models,
        "engines": engines,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
