"""The server's configuration: one ``Settings`` read from ``VIDSERVE_*`` environment
variables, validated once at startup. Model hyper-parameters live beside the models
(``models/*/config.py``); this holds only what an operator tunes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from models.settings import StoreSettings
from models.weights.registry import DEFAULT_MODEL, MODELS
from server.access import KeyLimits, check_keys

EngineChoice = Literal["auto", "eager", "torchscript", "onnx"]


class Settings(StoreSettings):
    """Every knob of the server. ``VIDSERVE_MAX_BATCH_SIZE=16`` sets ``max_batch_size``. The
    weights cache, the model repository and the weights' sources come from ``StoreSettings``,
    which the offline CLI reads too: no ``VIDSERVE_*`` variable is read anywhere else."""

    model_config = SettingsConfigDict(env_prefix="VIDSERVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="address uvicorn binds (0.0.0.0 in the container)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    public_url: str | None = Field(
        None, description="base URL clients reach the server at, for session websocket URLs"
    )
    api_keys: dict[str, KeyLimits] | None = Field(
        None,
        description='API keys, JSON {"KEY": {"name": "editor-a", "max_sessions": 8, "max_jobs": 4}}; '
        "unset: the server runs open",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to change state and stream, besides the server's own ('*': any)",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names served besides loopback, the bound address and public_url's ('*': any)",
    )
    models: list[str] = Field(
        default_factory=lambda: [DEFAULT_MODEL], description="registry models loaded at startup"
    )
    weights: dict[str, Path] = Field(
        default_factory=dict, description="explicit checkpoint files by model, instead of fetching"
    )
    engine: EngineChoice = Field(
        "auto",
        description="backend: auto picks each model family's fastest measured here (onnx on a "
        "CUDA host; on CPU torchscript, but onnx for segmentation)",
    )
    providers: list[str] | None = Field(
        None, description="onnxruntime execution providers, in order (default: TensorRT, CUDA, CPU on GPU)"
    )
    fp16: bool = Field(False, description="half-precision engines (GPU only)")
    max_batch_size: int = Field(8, ge=1, le=256, description="most rows one engine call takes")
    max_queue_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="how long the first queued request waits for a fuller batch"
    )
    max_queue_size: int = Field(64, ge=1, description="queued rows per engine before callers get 429/1013")
    max_sessions: int = Field(64, ge=1, description="open sessions before POST /v1/sessions answers 429")
    session_ttl_s: float = Field(300.0, gt=0, description="idle seconds before a session expires")
    max_objects: int = Field(32, ge=1, le=255, description="objects one segmentation session may track")
    memory_budget_bytes: int = Field(
        8 * 2**30, ge=0, description="segmentation memory all sessions may reserve (each its worst case)"
    )
    max_pixels: int = Field(3840 * 2160, ge=1, description="largest frame accepted (width × height)")
    max_output_pixels: int = Field(
        2 * 3840 * 2160,
        ge=1,
        description="pixels of in-between frames one frame may ask for (timesteps × padded size): "
        "4K at factor 2, 1080p at factor 8, 540p at factor 32",
    )
    max_message_bytes: int = Field(
        64 * 2**20, ge=1024, description="largest upload or websocket message, in bytes"
    )
    max_jobs: int = Field(
        16, ge=0, description="clip jobs kept at once (queued, running or holding a result); 0 turns jobs off"
    )
    max_running_jobs: int = Field(2, ge=1, description="clip jobs decoding and running at the same time")
    max_job_upload_bytes: int = Field(2 * 2**30, ge=1024, description="largest video a clip job accepts")
    max_job_frames: int = Field(
        18_000, ge=1, description="most frames a clip job may decode (10 minutes at 30 fps)"
    )
    max_clip_frames: int = Field(
        3600, ge=1, description="most frames one POST /v1/clips decodes (longer videos go to /v1/jobs)"
    )
    job_result_ttl_s: float = Field(
        3600.0, gt=0, description="seconds a finished job's result is kept before it is deleted"
    )
    job_dir: Path | None = Field(
        None, description="where uploads and results of clip jobs are kept (default: a temporary folder)"
    )
    malloc_mmap_threshold_mb: int = Field(
        1024,
        ge=0,
        le=2047,
        description="glibc allocations above this many MiB get their own mmap, below it the heap; "
        "0 keeps glibc's own (32 MiB at most), which faults in every large tensor anew "
        "(bench/allocator.py: an interpolation batch of 4 at 720p went from 1.6M page faults to 15k)",
    )
    malloc_trim_threshold_mb: int = Field(
        1024,
        ge=0,
        le=2047,
        description="free memory kept at the heap's top before it goes back to the system; at "
        "least the mmap threshold. Resident memory stays near the peak working set",
    )
    malloc_arena_max: int = Field(
        1,
        ge=0,
        le=1024,
        description="glibc malloc arenas all threads share; 0 keeps glibc's (8 per core). A worker "
        "thread's own arena maps every block over 64 MiB afresh, whatever the mmap threshold",
    )
    state_store: str | None = Field(
        None,
        description="redis://host:port/db: sessions' state is kept there and resumed on any replica "
        "(unset: sessions live in this process only)",
    )
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="with a state store, also checkpoint a streaming session every this many memory "
        "writes (segmentation: memory frames; other tasks: frames), so a crash loses at most "
        "that many; 0: only on drain and when a session is opened",
    )
    lease_ttl_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="with a state store, how long a replica's claim on a session lasts unless "
        "renewed (it is renewed every third of it): after a crash, another replica resumes the "
        "session this much later at most",
    )
    replica_id: str | None = Field(
        None, max_length=200, description="this replica's name in leases and logs (default: host:pid)"
    )
    drain_timeout_s: float = Field(
        25.0,
        ge=0,
        description="on SIGTERM, the whole stop's time: in-flight frames finish, then streams close "
        "(within compose's 30 s grace)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one object per line, with session id, frame index and request id"
    )

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, keys: dict[str, KeyLimits] | None) -> dict[str, KeyLimits] | None:
        return None if keys is None else check_keys(keys)

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {sorted(MODELS)}")
        if not models:
            raise ValueError("at least one model must be loaded")
        return models


def settings_table() -> str:
    """The README's settings table, made from the fields above so that it cannot go stale."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `VIDSERVE_{name.upper()}` | {_default(field)} | {field.description} |")
    return "\n".join(rows) + "\n"


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "–"
    text = json.dumps(value) if isinstance(value, list | dict | bool) else str(value)
    return f"`{text}`"
