"""The JSON answers of the generic routes as models, so the OpenAPI schema says what each
holds (issue 14). A session's own fields differ by task: its view names what every session
has and lets the task's fields through."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EnginePartView(BaseModel):
    """One engine part of a model, and what really runs it."""

    model: str
    part: str
    name: str = Field(description="its model label in metrics")
    backend: str
    fp16: bool
    device: str
    providers: list[str] = Field(description="the execution providers that really run")
    requested_providers: list[str]
    fell_back: bool = Field(description="a requested provider failed to load and another runs")
    warm: bool
    path: str | None


class ModelView(BaseModel):
    name: str
    task: str
    state: str = Field(description="loading, ready or failed")
    reason: str | None = Field(description="why it failed, and what to do")
    engines: list[EnginePartView]
    warmup_s: float | None


class ModelsView(BaseModel):
    models: list[ModelView]


class ProgressView(BaseModel):
    frames_done: int
    frames_total: int = Field(description="the container's count until decoding ends, then the real one")
    fraction: float
    frames_dropped: int = Field(description="input frames left out as repeats (interpolation's dedup)")
    frames_per_s: float | None
    eta_s: float | None


class VideoView(BaseModel):
    width: int
    height: int
    fps: float
    frames: int | None
    has_audio: bool


class JobView(BaseModel):
    """A clip job as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    task: str
    model: str
    state: str = Field(description="queued, running, done, failed or cancelled")
    progress: ProgressView
    error: str | None
    warnings: list[str] = Field(
        description="what a finished result lacks: e.g. a cut file decoded to fewer frames than announced"
    )
    video: VideoView
    created_at: float
    started_at: float | None
    finished_at: float | None
    url: str
    result_url: str | None


class JobsView(BaseModel):
    jobs: list[JobView] = Field(description="the caller's jobs")


class SessionView(BaseModel):
    """What every session shows; each task adds its own fields (docs/protocol.md)."""

    model_config = ConfigDict(extra="allow")

    id: str
    state: str = Field(description="open, streaming, closed, expired, or moved (to the state store)")
    created_at: float
    idle_s: float
    frames_in: int
    frames_done: int
    frames_failed: int
    in_flight: int
    dropped: int
    checkpoint: dict[str, object] | None = Field(
        None,
        description="with a state store: the last checkpoint this replica wrote of it: frame_index, "
        "bytes (the state's size in the store), seconds (packing and writing), at (epoch s)",
    )
    resumed: bool = Field(
        False, description="with a state store: restored from a checkpoint, and no frame answered since"
    )
    resumed_from_frame: int | None = Field(
        None,
        description="when resumed: the frame_index the checkpoint was taken after (null: before "
        "any frame); frames after it that were answered before are to be sent again",
    )
    task: str
    model: str


class CreatedSessionView(SessionView):
    url: str
    stream_url: str = Field(description="the websocket to stream frames over")
    ttl_s: float


class HealthView(BaseModel):
    status: str


class ReadyView(BaseModel):
    ready: bool
    draining: bool
    error: str | None
    models: list[str]
    engines: list[EnginePartView]
