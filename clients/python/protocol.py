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


# --- REST ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A clip job as ``GET /v1/jobs/{id}`` reports it."""

    id: str
    task: str  # "interpolate" or "segment"
    state: str  # queued, running, done, failed or cancelled
    frames_done: int  # input frames processed
    frames_total: int  # input frames to process (the container's count until decoded)
    error: str | None  # why it failed or was cancelled
    result_url: str | None  # where the result downloads from, once done
    raw: dict[str, Any]  # the whole answer, for fields not above

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
) -> str | None:
    """The JSON header for the next frame, or None when every field is the default."""
    header: dict[str, Any] = {"type": "frame"}
    if frame_index is not None:
        header["frame_index"] = frame_index
    if pts is not None:
        header["pts"] = pts
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
