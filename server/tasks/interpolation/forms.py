"""Interpolation's form fields (REST and jobs) from their wire formats to typed values."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from models.rife.inference import InterpolationInputError, check_timesteps, timesteps_for_factor
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import SCALES


def parse_timesteps(values: list[str] | None, factor: int | None) -> list[float]:
    """Timesteps from repeated fields, "0.25,0.5", or "[0.25, 0.5]"; else from ``factor``
    (default 2: the middle frame). Both at once is an error."""
    given = [v for v in values or [] if v.strip()]
    if given and factor is not None:
        raise InterpolationInputError("give timesteps or factor, not both")
    if not given:
        return timesteps_for_factor(2 if factor is None else factor)
    timesteps: list[float] = []
    for value in given:
        text = value.strip()
        try:
            parsed = json.loads(text) if text.startswith("[") else [float(t) for t in text.split(",")]
            timesteps.extend(float(t) for t in parsed)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InterpolationInputError(f"timesteps must be numbers in (0, 1), got {value!r}") from exc
    check_timesteps(timesteps)
    return timesteps


def parse_threshold(value: str | None) -> float | None:
    """ "none" or "off" turns scene detection off; otherwise an SSIM threshold in [0, 1]."""
    if value is None or value.strip() == "":
        return DEFAULT_SCENE_CHANGE_THRESHOLD
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = -1.0
    if not 0.0 <= threshold <= 1.0:
        raise InterpolationInputError(f"scene_change_threshold must be in [0, 1] or 'none', got {value!r}")
    return threshold


class InterpolationJobForm(BaseModel):
    """The fields of an interpolation clip job."""

    factor: int = Field(2, ge=2, le=64, description="interpolate: N× frame rate")
    scale: float = Field(
        1.0, description="interpolate: flow scale, 0.5 for 4K", json_schema_extra={"enum": list(SCALES)}
    )
    scene_change_threshold: str | None = Field(None, description="interpolate: SSIM cut or 'none'")
    fps: str | None = Field(
        None,
        max_length=32,
        description="interpolate: constant output frame rate instead of factor (60, 59.94, 60000/1001); "
        "each output frame at its instant k/fps, interpolated at its own timestep",
    )
    dedup: bool | None = Field(
        None, description="interpolate: drop repeated source frames first (default: with fps)"
    )
    start: float | None = Field(None, ge=0, le=1e7, description="interpolate: read from this time on (s)")
    end: float | None = Field(None, gt=0, le=1e7, description="interpolate: stop before this time (s)")
