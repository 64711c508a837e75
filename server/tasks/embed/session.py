"""The state of one embed stream, and the body that opens one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.videomae.inference import MAX_FRAMES_PER_CLIP, ClipState, Drop, WindowSpec
from server.sessions.store import SessionCore

TASK = "embed"
MAX_TOP_K = 400  # why: a Kinetics-400 head has no more labels to give
MAX_STRIDE = 100_000  # why: an hour at 30 fps between windows; more is no stream


class WindowFields(BaseModel):
    """How frames are cut into windows: the fields sessions, ``POST /v1/clips`` and jobs share."""

    frames_per_clip: int = Field(
        16, ge=2, le=MAX_FRAMES_PER_CLIP, description="sampled frames per window (even; trained on 16)"
    )
    sampling_rate: int = Field(4, ge=1, le=64, description="every Nth frame is sampled (4: the K400 recipe)")
    stride: int | None = Field(
        None,
        ge=1,
        le=MAX_STRIDE,
        description="frames between window starts, a multiple of 2 × sampling_rate "
        "(default: frames_per_clip × sampling_rate, windows side by side)",
    )
    keep_ratio: float = Field(1.0, gt=0, le=1, description="share of each window's tokens that run")
    drop: Drop = Field("tube", description="tokens dropped when keep_ratio < 1: tube or static")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="labels per window")

    def window_spec(self) -> WindowSpec:
        return WindowSpec(self.frames_per_clip, self.sampling_rate, self.stride, self.keep_ratio, self.drop)


class EmbedSessionCreate(WindowFields):
    """A live stream of clip embeddings and action labels."""

    model_config = ConfigDict(extra="forbid")  # why: a misspelt "keep_ration" must not pass silently

    task: Literal["embed"]
    model: str | None = Field(None, description="served VideoMAE model (default: the first configured)")


@dataclass
class EmbedSession:
    """One stream of frames (a live session, a REST clip, a clip job): its windowing, its ring
    of tubelet tokens, and its counters."""

    core: SessionCore  # id, life-cycle and counters every task shares
    model: str  # registry name of the VideoMAE model
    clip: ClipState  # the ring of embedded slices and the frame waiting for its pair
    top_k: int  # labels per window
    reserved_bytes: int = 0  # held in the memory budget: a full ring
    size: tuple[int, int] | None = None  # H, W, fixed by the first frame
    tokens_run: int = 0  # tokens encoded over every window
    task: str = field(default=TASK, init=False)

    @property
    def id(self) -> str:
        return self.core.id

    @property
    def spec(self) -> WindowSpec:
        return self.clip.spec

    def public(self) -> dict[str, object]:
        """What GET /v1/sessions/{id} shows."""
        spec = self.spec
        return {
            **self.core.public(),
            "task": self.task,
            "model": self.model,
            "frames_per_clip": spec.frames_per_clip,
            "sampling_rate": spec.sampling_rate,
            "stride": spec.step,
            "window_frames": spec.span,
            "keep_ratio": spec.keep_ratio,
            "drop": spec.drop,
            "top_k": self.top_k,
            "frame_size": list(self.size) if self.size else None,
            "windows": self.clip.windows,
            "slices": self.clip.slices,
            "tokens_run": self.tokens_run,
            "reserved_bytes": self.reserved_bytes,
        }
