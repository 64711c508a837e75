"""The OpenAPI schema as the truth: every status an operation can answer, with the error
body they share, and ``/metrics`` as the text it is. FastAPI documents only 2xx and 422 by
itself, while 400, 401, 403, 404, 409, 410, 413, 429, 500 and 503 happen (issue 14)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

ERROR_SCHEMA = "ErrorBody"
# status → when it answers, for every /v1 operation
V1_ERRORS: dict[str, str] = {
    "400": "not an image, a mask or a video it can read; an untrusted Host",
    "401": "an API key is needed (VIDSERVE_API_KEYS), or the one given is unknown",
    "403": "a browser page of an origin not allowed",
    "404": "no such model, session or job (or another key's)",
    "409": "the session or job is not in a state for this",
    "410": "the session was closed or expired",
    "413": "a body, frame or output over its bound",
    "422": "a field outside its bounds, or input the task cannot take",
    "429": "a full queue, the session or job limit, or the key's quota (Retry-After)",
    "500": "a server bug; see the server log",
    "503": "the model is loading or failed to load, or the server is draining (Retry-After)",
}


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorFields(BaseModel):
    code: str = Field(description="machine-readable reason")
    message: str = Field(description="what went wrong, and what to do (at most 500 characters)")
    details: list[ErrorDetail] | None = Field(None, description="422: the fields that failed, at most 20")


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message"}}``."""

    error: ErrorFields


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that declares every status of every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = complete(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_error_schemas())
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1"):
                for status, when in V1_ERRORS.items():
                    responses.setdefault(status, _error_response(when))
                responses["422"] = _error_response(V1_ERRORS["422"])  # why: ours, not FastAPI's
            elif path == "/readyz":
                responses.setdefault("503", {"description": "not every model is ready, or draining"})
            elif path == "/metrics":
                responses["200"] = {
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
    return schema


def _error_response(when: str) -> dict[str, Any]:
    return {
        "description": when,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}},
    }


def _error_schemas() -> dict[str, Any]:
    generated = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(generated.pop("$defs", {}))
    schemas[ERROR_SCHEMA] = generated
    return schemas
