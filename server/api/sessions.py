"""``/v1/sessions``: open, inspect and close streaming sessions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.rife.inference import timesteps_for_factor
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import SCALES
from server.api.deps import State
from server.api.errors import ApiError
from server.media import ImageFormat
from server.sessions import InterpolationSession, SessionState
from server.sessions.store import new_core

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class InterpolationSessionCreate(BaseModel):
    """A live interpolation stream."""

    model_config = ConfigDict(extra="forbid")  # why: a misspelt "factr" must not pass silently

    task: Literal["interpolate"]
    model: str | None = Field(None, description="served RIFE model (default: the first configured)")
    factor: int | None = Field(None, ge=2, le=64, description="N× frame rate: timesteps i/N")
    timesteps: list[float] | None = Field(
        None, min_length=1, max_length=63, description="increasing positions in (0, 1)"
    )
    scale: float = Field(1.0, description=f"flow scale, one of {list(SCALES)}: 0.5 for 4K")
    scene_change_threshold: float | None = Field(
        DEFAULT_SCENE_CHANGE_THRESHOLD, ge=0, le=1, description="thumbnail SSIM below which a pair is a cut"
    )
    output_format: ImageFormat = "png"

    @model_validator(mode="after")
    def _one_of_factor_or_timesteps(self) -> InterpolationSessionCreate:
        if self.factor is not None and self.timesteps is not None:
            raise ValueError("give factor or timesteps, not both")
        if self.timesteps is not None:
            if any(not 0 < t < 1 for t in self.timesteps):
                raise ValueError(f"timesteps must lie strictly between 0 and 1, got {self.timesteps}")
            if any(b <= a for a, b in zip(self.timesteps, self.timesteps[1:], strict=False)):
                raise ValueError("timesteps must increase, so frames come back in time order")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {list(SCALES)}, got {self.scale}")
        return self

    def resolved_timesteps(self) -> list[float]:
        return self.timesteps or timesteps_for_factor(self.factor or 2)


SessionCreate = Annotated[InterpolationSessionCreate, Field(discriminator="task")]


def stream_url(state: State, request: Request, session_id: str) -> str:
    base = state.settings.public_url or str(request.base_url)
    base = base.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/v1/sessions/{session_id}/stream"


@router.post("", status_code=201, summary="Open a session")
async def create_session(body: SessionCreate, state: State, request: Request) -> JSONResponse:
    service = state.interpolation_service(body.model)
    timesteps = body.resolved_timesteps()
    if len(timesteps) > state.settings.max_queue_size:
        raise ApiError(
            422, "too_many_rows", f"{len(timesteps)} timesteps per frame exceed the engine queue of "
            f"{state.settings.max_queue_size} (VIDSERVE_MAX_QUEUE_SIZE)",
        )  # fmt: skip
    session = InterpolationSession(
        core=new_core(),
        model=service.engine.model,
        timesteps=timesteps,
        scale=body.scale,
        scene_change_threshold=body.scene_change_threshold,
        output_format=body.output_format,
    )
    state.sessions.add(session)
    url = f"/v1/sessions/{session.id}"
    content = {
        **session.public(),
        "url": url,
        "stream_url": stream_url(state, request, session.id),
        "ttl_s": state.settings.session_ttl_s,
    }
    return JSONResponse(content, status_code=201, headers={"Location": url})


@router.get("/{session_id}", summary="A session's state and counters")
async def get_session(session_id: str, state: State) -> dict[str, object]:
    return state.sessions.get(session_id).public()


@router.delete("/{session_id}", summary="Close a session and free its state")
async def delete_session(session_id: str, state: State) -> dict[str, object]:
    session = await state.sessions.close(session_id, SessionState.CLOSED, "deleted by the client")
    return session.public()
