"""``/v1/sessions``: open, inspect and close streaming sessions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.rife.inference import timesteps_for_factor
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import SCALES
from models.xmem.config import XMemConfig
from server.api.deps import State
from server.api.errors import ApiError
from server.media import ImageFormat
from server.sessions import InterpolationSession, SegmentationSession, SessionState
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


XMEM_DEFAULTS = XMemConfig()
DEFAULT_OBJECTS = 4  # why: each object adds 512 floats to every memory element; ask for more
DEFAULT_SIDE = 480  # why: XMem's evaluation size, for reserving before the first frame


class SegmentationSessionCreate(BaseModel):
    """A live segmentation stream. Memory settings default to the paper's and are bounded
    so that one session cannot take the whole budget by asking."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["segment"]
    model: str | None = Field(None, description="served XMem model (default: the first configured)")
    processing_size: int | None = Field(
        480,
        ge=64,
        le=2160,
        description="frames' shorter side is resized to this (XMem's 480); null: as given",
    )
    max_objects: int | None = Field(
        None,
        ge=1,
        le=255,
        description=f"objects at once (default {DEFAULT_OBJECTS}, at most VIDSERVE_MAX_OBJECTS)",
    )
    output_format: Literal["png", "rle"] = Field("png", description="index PNG, or COCO RLE per object")
    probabilities: bool = Field(False, description="also return each object's probability as an 8-bit PNG")
    mem_every: int = Field(XMEM_DEFAULTS.mem_every, ge=1, le=100)
    top_k: int = Field(XMEM_DEFAULTS.top_k, ge=1, le=256)
    min_mid_term_frames: int = Field(XMEM_DEFAULTS.min_mid_term_frames, ge=1, le=50, description="T_min")
    max_mid_term_frames: int = Field(XMEM_DEFAULTS.max_mid_term_frames, ge=2, le=100, description="T_max")
    num_prototypes: int = Field(XMEM_DEFAULTS.num_prototypes, ge=1, le=1024)
    max_long_term_elements: int = Field(XMEM_DEFAULTS.max_long_term_elements, ge=16, le=100_000)

    def xmem_config(self) -> XMemConfig:
        return XMEM_DEFAULTS.replace(
            mem_every=self.mem_every,
            top_k=self.top_k,
            min_mid_term_frames=self.min_mid_term_frames,
            max_mid_term_frames=self.max_mid_term_frames,
            num_prototypes=self.num_prototypes,
            max_long_term_elements=self.max_long_term_elements,
        )


SessionCreate = Annotated[InterpolationSessionCreate | SegmentationSessionCreate, Field(discriminator="task")]


def stream_url(state: State, request: Request, session_id: str) -> str:
    base = state.settings.public_url or str(request.base_url)
    base = base.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/v1/sessions/{session_id}/stream"


@router.post("", status_code=201, summary="Open a session")
async def create_session(body: SessionCreate, state: State, request: Request) -> JSONResponse:
    session: InterpolationSession | SegmentationSession
    if isinstance(body, InterpolationSessionCreate):
        session = new_interpolation(body, state)
    else:
        session = new_segmentation(body, state)
    try:
        state.sessions.add(session)
    except Exception:
        state.budget.release(session.id)
        raise
    url = f"/v1/sessions/{session.id}"
    content = {
        **session.public(),
        "url": url,
        "stream_url": stream_url(state, request, session.id),
        "ttl_s": state.settings.session_ttl_s,
    }
    return JSONResponse(content, status_code=201, headers={"Location": url})


def new_segmentation(body: SegmentationSessionCreate, state: State) -> SegmentationSession:
    """A session with its own XMem core over the shared engines, its worst case reserved."""
    service = state.segmentation_service(body.model)
    max_objects = body.max_objects or min(DEFAULT_OBJECTS, state.settings.max_objects)
    if max_objects > state.settings.max_objects:
        raise ApiError(
            422,
            "invalid_argument",
            f"max_objects {max_objects} exceeds the server's {state.settings.max_objects}",
        )
    config = body.xmem_config()
    core = new_core()
    # why this guess: the frame size is unknown until the first frame; assume up to 2:1 at the
    # processing size (or the pixel limit), and settle the exact figure on that frame
    side = body.processing_size or DEFAULT_SIDE
    reserved = service.memory_bound(config, (side, 2 * side), None, max_objects)
    state.budget.reserve(core.id, reserved)
    return SegmentationSession(
        core=core,
        model=service.model,
        xmem=service.fresh(config),
        processing_size=body.processing_size,
        max_objects=max_objects,
        output_format=body.output_format,
        probabilities=body.probabilities,
        reserved_bytes=reserved,
    )


def new_interpolation(body: InterpolationSessionCreate, state: State) -> InterpolationSession:
    service = state.interpolation_service(body.model)
    timesteps = body.resolved_timesteps()
    if len(timesteps) > state.settings.max_queue_size:
        raise ApiError(
            422, "too_many_rows", f"{len(timesteps)} timesteps per frame exceed the engine queue of "
            f"{state.settings.max_queue_size} (VIDSERVE_MAX_QUEUE_SIZE)",
        )  # fmt: skip
    return InterpolationSession(
        core=new_core(),
        model=service.engine.model,
        timesteps=timesteps,
        scale=body.scale,
        scene_change_threshold=body.scene_change_threshold,
        output_format=body.output_format,
    )


@router.get("/{session_id}", summary="A session's state and counters")
async def get_session(session_id: str, state: State) -> dict[str, object]:
    return state.sessions.get(session_id).public()


@router.delete("/{session_id}", summary="Close a session and free its state")
async def delete_session(session_id: str, state: State) -> dict[str, object]:
    session = await state.sessions.close(session_id, SessionState.CLOSED, "deleted by the client")
    return session.public()
