"""The clip encoder's answers as JSON: one segment per window, and a clip's segments with
their mean, as ``POST /v1/clips``, clip jobs and the stream's ``result`` give them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from models.videomae.inference import Window, WindowSpec
from models.videomae.labels import top_labels


class LabelView(BaseModel):
    label: str = Field(description="Kinetics-400 class name")
    index: int
    score: float = Field(description="softmax probability")


class SegmentView(BaseModel):
    """One window of a clip."""

    window: int
    start_frame: int = Field(description="frame index of its first sampled frame")
    end_frame: int = Field(description="frame index of its last sampled frame")
    pts: float | None = Field(description="the first sampled frame's time, when known")
    end_pts: float | None
    embedding: list[float] = Field(description="fc_norm of the mean over the kept tokens")
    labels: list[LabelView] = Field(description="best first")
    tokens: int = Field(description="tokens that ran")
    tokens_total: int = Field(description="tokens the window has")


class ClipView(BaseModel):
    """``POST /v1/clips``'s answer, and an embed job's result."""

    model: str
    frames: int
    frames_per_clip: int
    sampling_rate: int
    stride: int
    keep_ratio: float
    drop: str
    segments: list[SegmentView]
    embedding: list[float] = Field(description="the mean of the segments' embeddings")


def segment(window: Window, top_k: int) -> dict[str, object]:
    """One window: its frames, times, embedding, top labels and the tokens that ran."""
    return {
        "window": window.number,
        "start_frame": window.start_index,
        "end_frame": window.end_index,
        "pts": window.start_pts,
        "end_pts": window.end_pts,
        "embedding": window.embedding.tolist(),
        "labels": top_labels(window.logits, top_k),
        "tokens": window.tokens,
        "tokens_total": window.tokens_total,
    }


def clip_answer(
    model: str, spec: WindowSpec, frames: int, windows: Sequence[Window], top_k: int
) -> dict[str, object]:
    """A whole clip: its settings, one segment per window, and the mean embedding."""
    mean = np.mean([w.embedding for w in windows], axis=0) if windows else np.zeros(0, np.float32)
    return {
        "model": model,
        "frames": frames,
        "frames_per_clip": spec.frames_per_clip,
        "sampling_rate": spec.sampling_rate,
        "stride": spec.step,
        "keep_ratio": spec.keep_ratio,
        "drop": spec.drop,
        "segments": [segment(w, top_k) for w in windows],
        "embedding": mean.astype(np.float32).tolist(),
    }


def too_short(spec: WindowSpec, frames: int) -> str:
    return (
        f"the clip has {frames} frames; one window of {spec.frames_per_clip} frames sampled every "
        f"{spec.sampling_rate} needs at least {spec.span}"
    )
