"""The state of one interpolation stream, and the body that opens one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.rife.inference import PreparedFrame, timesteps_for_factor
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import SCALES
from server.media import ImageFormat
from server.sessions.store import SessionCore

TASK = "interpolate"


class InterpolationSessionCreate(BaseModel):
    """A live interpolation stream."""

    model_config = ConfigDict(extra="forbid")  # why: a misspelt "factr" must not pass silently

    task: Literal["interpolate"]
    model: str | None = Field(None, description="served RIFE model (default: the first configured)")
    factor: int | None = Field(None, ge=2, le=64, description="N× frame rate: timesteps i/N")
    timesteps: list[float] | None = Field(
        None, min_length=1, max_length=63, description="increasing positions in (0, 1)"
    )
    scale: float = Field(1.0, description="flow scale: 0.5 for 4K", json_schema_extra={"enum": list(SCALES)})
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


@dataclass
class InterpolationSession:
    """One stream of frames (a live session, a REST pair, a clip job): its settings, the
    frame before the next one, and its counters."""

    core: SessionCore  # id, life-cycle and counters every task shares
    model: str  # registry name of the RIFE model
    timesteps: list[float]  # in-between positions in (0, 1), ascending
    scale: float  # flow resolution (RIFE's scale): 1.0 up to 1080p, 0.5 for 4K
    scene_change_threshold: float | None  # thumbnail SSIM below which a pair is a cut; None: never
    output_format: ImageFormat = "png"  # encoding of returned frames
    size: tuple[int, int] | None = None  # H, W, fixed by the first frame
    previous: PreparedFrame | None = (
        None  # the last good frame, padded (and its features): the next pair's start
    )
    previous_index: int | None = None  # its frame_index
    previous_pts: float | None = None  # its presentation time, when the client gave one
    outputs: int = 0  # in-between frames returned
    scene_changes: int = 0  # pairs answered with the earlier frame
    task: str = field(default=TASK, init=False)

    @property
    def id(self) -> str:
        return self.core.id

    def public(self) -> dict[str, object]:
        """What GET /v1/sessions/{id} shows."""
        return {
            **self.core.public(),
            "task": self.task,
            "model": self.model,
            "timesteps": self.timesteps,
            "scale": self.scale,
            "scene_change_threshold": self.scene_change_threshold,
            "output_format": self.output_format,
            "frame_size": list(self.size) if self.size else None,
            "outputs": self.outputs,
            "scene_changes": self.scene_changes,
        }
