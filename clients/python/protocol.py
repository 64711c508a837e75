"""The protocol's messages, built and parsed in one place for the sync and async clients
(docs/protocol.md): result types, request bodies, stream headers and answers."""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.python.errors import FrameRejected, InvalidRequest
from clients.python.frames import decode_gray, decode_index, decode_rgb, mask_ids, mask_spec


@dataclass(frozen=True)
class Interpolated:
    """One in-between frame of ``POST /v1/interpolate``."""

    timestep: float  # in (0, 1)
    frame: np.ndarray  # uint8 H×W×3
    scene_change: bool  # the pair was a cut: frame is the earlier frame, unchanged


@dataclass(frozen=True)
class StreamedFrame:
    """One in-between frame of a stream's pair."""

    timestep: float
    frame: np.ndarray  # uint8 H×W×3
    source: tuple[int, int]  # the pair's frame indices
    pts: float | None  # pts0 + timestep·(pts1 − pts0), when both frames had a pts
    scene_change: bool


@dataclass(frozen=True)
class FrameResult:
    """A stream's answer to one frame: its pair's in-between frames, in timestep order."""

    frame_index: int
    frames: list[StreamedFrame]
    scene_change: bool
    ms: float  # server time for the frame


@dataclass(frozen=True)
class SegmentResult:
    """A segmentation stream's answer to one frame."""

    frame_index: int
    mask: np.ndarray | None  # uint8 H×W object ids ("png" sessions); None for "rle"
    objects: list[int]  # ids present in the mask
    tracked: list[int]  # ids tracked, ascending
    is_memory_frame: bool
    probabilities: dict[int, np.ndarray] | None  # id → uint8 H×W probability·255, if asked
    rles: dict[str, Any] | None = None  # "rle" sessions: {"id": {"size", "counts"}}
    ms: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the result message as sent


@dataclass(frozen=True)
class ClipLabel:
    """One of a window's top Kinetics-400 labels."""

    label: str  # the class name ("marching")
    index: int  # its row in the classifier, 0–399
    score: float  # softmax probability, in (0, 1)


@dataclass(frozen=True)
class ClipSegment:
    """One window of a clip: the frames it spans, its embedding and top labels."""

    window: int  # 0 for the clip's (or stream's) first window
    start_frame: int  # frame index of its first sampled frame
    end_frame: int  # frame index of its last sampled frame
    pts: float | None  # the first sampled frame's time, when known
    end_pts: float | None  # the last sampled frame's time, when known
    embedding: np.ndarray  # float32 D (384 for vit-s, 768 for vit-b)
    labels: list[ClipLabel]  # best first
    tokens: int  # tokens that ran (fewer than tokens_total when keep_ratio < 1)
    tokens_total: int  # tokens the window has

    @property
    def top_label(self) -> ClipLabel | None:
        return self.labels[0] if self.labels else None


@dataclass(frozen=True)
class ClipEmbedding:
    """The answer of ``POST /v1/clips`` (and an embed job's result): one segment per window
    and their mean."""

    model: str
    frames: int  # frames the clip had
    frames_per_clip: int
    sampling_rate: int
    stride: int  # frames between window starts, as the server resolved it
    keep_ratio: float
    drop: str  # "tube" or "static"
    segments: list[ClipSegment]  # in window order
    embedding: np.ndarray  # float32 D: the mean of the segments' embeddings
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the answer as sent


@dataclass(frozen=True)
class EmbedFrameResult:
    """An embed stream's answer to one frame: the window it completed, if any."""

    frame_index: int
    segment: ClipSegment | None  # the window this frame completed; None for most frames
    sampled: bool  # the frame is one of the windows' sampled frames
    ms: float  # server time for the frame


# --- REST ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A clip job as ``GET /v1/jobs/{id}`` reports it."""

    id: str
    task: str  # "interpolate", "segment" or "embed"
    state: str  # queued, running, done, failed or cancelled
    frames_done: int  # input frames processed
    frames_total: int  # input frames to process (the container's count until decoded)
    error: str | None  # why it failed or was cancelled
    result_url: str | None  # where the result downloads from, once done
    raw: dict[str, Any]  # the whole answer, for fields not above
    warnings: tuple[str, ...] = ()  # what a finished result lacks (a cut file's missing frames)

    @property
    def is_finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


def parse_job(body: dict[str, Any]) -> Job:
    progress = body.get("progress", {})
    return Job(
        id=body["id"],
        task=body["task"],
        state=body["state"],
        frames_done=int(progress.get("frames_done", 0)),
        frames_total=int(progress.get("frames_total", 0)),
        error=body.get("error"),
        result_url=body.get("result_url"),
        raw=body,
        warnings=tuple(str(w) for w in body.get("warnings") or ()),
    )


def job_form(task: str, params: dict[str, Any]) -> dict[str, str]:
    """A job's form fields: None left out, booleans and numbers as text."""
    return {"task": task, **{k: str(v) for k, v in params.items() if v is not None}}


def interpolate_form(
    timesteps: list[float] | None,
    factor: int | None,
    scale: float,
    model: str | None,
    output_format: str,
    scene_change_threshold: float | str | None,
) -> dict[str, str]:
    """The form fields of ``POST /v1/interpolate`` (the two frames go as files)."""
    form = {"scale": repr(float(scale)), "output_format": output_format}
    if timesteps is not None:
        form["timesteps"] = ",".join(repr(float(t)) for t in timesteps)
    if factor is not None:
        form["factor"] = str(factor)
    if model is not None:
        form["model"] = model
    if scene_change_threshold != "default":
        threshold = scene_change_threshold
        form["scene_change_threshold"] = "none" if threshold is None else str(threshold)
    return form


def parse_interpolated(content_type: str, content: bytes) -> list[Interpolated]:
    """One image (headers X-Timestep, X-Scene-Change) or multipart/mixed, one part per timestep."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + content)
    if not message.is_multipart():
        raise ValueError("parse_interpolated: not multipart; use parse_single")
    found = []
    for part in message.iter_parts():
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            raise ValueError("a multipart part without a body")
        found.append(_interpolated(dict(part.items()), body))
    return found


def parse_single(headers: dict[str, str], content: bytes) -> Interpolated:
    return _interpolated(headers, content)


def _interpolated(headers: dict[str, str], body: bytes) -> Interpolated:
    lower = {k.lower(): v for k, v in headers.items()}
    return Interpolated(
        timestep=float(lower["x-timestep"]),
        frame=decode_rgb(body),
        scene_change=lower.get("x-scene-change", "false").lower() == "true",
    )


def embed_fields(
    model: str | None,
    frames_per_clip: int,
    sampling_rate: int,
    stride: int | None,
    keep_ratio: float,
    drop: str,
    top_k: int,
) -> dict[str, Any]:
    """The window fields ``POST /v1/clips``, embed jobs and embed sessions share (None left
    out: the server's default)."""
    fields: dict[str, Any] = {
        "model": model,
        "frames_per_clip": frames_per_clip,
        "sampling_rate": sampling_rate,
        "stride": stride,
        "keep_ratio": keep_ratio,
        "drop": drop,
        "top_k": top_k,
    }
    return {k: v for k, v in fields.items() if v is not None}


def form_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Form fields as text (floats as repr, so nothing is rounded)."""
    return {k: repr(v) if isinstance(v, float) else str(v) for k, v in fields.items()}


def parse_clip(body: dict[str, Any]) -> ClipEmbedding:
    """``POST /v1/clips``'s JSON (or an embed job's result) as a ClipEmbedding."""
    return ClipEmbedding(
        model=str(body["model"]),
        frames=int(body["frames"]),
        frames_per_clip=int(body["frames_per_clip"]),
        sampling_rate=int(body["sampling_rate"]),
        stride=int(body["stride"]),
        keep_ratio=float(body["keep_ratio"]),
        drop=str(body["drop"]),
        segments=[clip_segment(s) for s in body["segments"]],
        embedding=np.asarray(body["embedding"], dtype=np.float32),
        raw=body,
    )


def clip_segment(message: dict[str, Any]) -> ClipSegment:
    """One segment of a clip's answer, or an embed stream's ``result`` message."""
    return ClipSegment(
        window=int(message["window"]),
        start_frame=int(message["start_frame"]),
        end_frame=int(message["end_frame"]),
        pts=_float_or_none(message.get("pts")),
        end_pts=_float_or_none(message.get("end_pts")),
        embedding=np.asarray(message["embedding"], dtype=np.float32),
        labels=[ClipLabel(str(x["label"]), int(x["index"]), float(x["score"])) for x in message["labels"]],
        tokens=int(message["tokens"]),
        tokens_total=int(message["tokens_total"]),
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def interpolation_body(
    factor: int | None,
    timesteps: list[float] | None,
    model: str | None,
    scale: float,
    scene_change_threshold: float | None,
    output_format: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "interpolate",
        "scale": scale,
        "scene_change_threshold": scene_change_threshold,
        "output_format": output_format,
    }
    if factor is not None:
        body["factor"] = factor
    if timesteps is not None:
        body["timesteps"] = list(timesteps)
    if model is not None:
        body["model"] = model
    return body


def segmentation_body(
    model: str | None,
    processing_size: int | None,
    max_objects: int,
    output_format: str,
    probabilities: bool,
    memory: dict[str, int | None],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "segment",
        "processing_size": processing_size,
        "max_objects": max_objects,
        "output_format": output_format,
        "probabilities": probabilities,
        **{k: v for k, v in memory.items() if v is not None},
    }
    if model is not None:
        body["model"] = model
    return body


# --- streams ------------------------------------------------------------------------------


def frame_header(
    frame_index: int | None = None,
    pts: float | None = None,
    mask: np.ndarray | dict[str, Any] | None = None,
    objects: list[int] | None = None,
    timesteps: list[float] | None = None,
) -> str | None:
    """The JSON header for the next frame, or None when every field is the default."""
    header: dict[str, Any] = {"type": "frame"}
    if frame_index is not None:
        header["frame_index"] = frame_index
    if pts is not None:
        header["pts"] = pts
    if timesteps is not None:
        header["timesteps"] = [float(t) for t in timesteps]
    if mask is not None:
        header["mask"] = mask_spec(mask)
        if objects is not None:
            header["objects"] = list(objects)
    return json.dumps(header) if len(header) > 1 else None


def mask_control(mask: np.ndarray | dict[str, Any], objects: list[int] | None) -> str:
    message: dict[str, Any] = {"type": "mask", "mask": mask_spec(mask)}
    if objects is not None:
        message["objects"] = list(objects)
    return json.dumps(message)


def remove_control(object_id: int) -> str:
    return json.dumps({"type": "remove_object", "object_id": object_id})


def reset_control() -> str:
    return json.dumps({"type": "reset"})


def parse_text(data: str | bytes) -> dict[str, Any]:
    """A server text message as a dict (a binary where text was due is a protocol error)."""
    if isinstance(data, bytes):
        raise InvalidRequest("protocol_error", "a binary message where a JSON message was due")
    message = json.loads(data)
    if not isinstance(message, dict) or "type" not in message:
        raise InvalidRequest("protocol_error", f"unexpected message {data[:200]!r}")
    return message


def rejected(message: dict[str, Any]) -> FrameRejected:
    """An ``error`` message as the exception to raise."""
    return FrameRejected(str(message.get("code")), str(message.get("message")), message.get("frame_index"))


def streamed_frame(message: dict[str, Any], image: bytes) -> StreamedFrame:
    """A ``result`` header and the binary message after it."""
    first, second = message["source"]
    return StreamedFrame(
        timestep=float(message["timestep"]),
        frame=decode_rgb(image),
        source=(int(first), int(second)),
        pts=message.get("pts"),
        scene_change=bool(message.get("scene_change")),
    )


def frame_result(done: dict[str, Any], frames: list[StreamedFrame]) -> FrameResult:
    return FrameResult(
        frame_index=int(done["frame_index"]),
        frames=frames,
        scene_change=bool(done.get("scene_change")),
        ms=float(done.get("ms", 0.0)),
    )


def embed_frame_result(done: dict[str, Any], segment: ClipSegment | None) -> EmbedFrameResult:
    """An embed stream's ``frame_done``, with the window its ``result`` carried (if any)."""
    return EmbedFrameResult(
        frame_index=int(done["frame_index"]),
        segment=segment,
        sampled=bool(done.get("sampled")),
        ms=float(done.get("ms", 0.0)),
    )


def segment_result(message: dict[str, Any], binaries: list[bytes]) -> SegmentResult:
    """A segmentation ``result`` and its binary messages: index PNG (png only), then one
    probability PNG per id of ``probabilities``."""
    rest = list(binaries)
    mask = decode_index(rest.pop(0)) if message.get("format") == "png" else None
    ids = message.get("probabilities")
    probabilities = None
    if ids is not None:
        probabilities = {int(i): decode_gray(b) for i, b in zip(ids, rest, strict=True)}
    return SegmentResult(
        frame_index=int(message["frame_index"]),
        mask=mask,
        objects=[int(i) for i in message.get("objects", [])],
        tracked=[int(i) for i in message.get("tracked", [])],
        is_memory_frame=bool(message.get("is_memory_frame")),
        probabilities=probabilities,
        rles=message.get("rles"),
        ms=float(message.get("ms", 0.0)),
        raw=message,
    )


def all_ids(mask: np.ndarray) -> list[int]:
    return mask_ids(mask)
