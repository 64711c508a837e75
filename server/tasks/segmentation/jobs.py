"""Segmentation clip jobs: a whole video through the task's one step (``step.py``), as a
session of its own at ``Priority.BATCH``, from the frame its mask belongs to: a zip of
index PNGs and COCO RLE, or an overlay video."""

from __future__ import annotations

import asyncio
import json
import time
import zipfile
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from fastapi import UploadFile
from pydantic import BaseModel, Field

from models.mask_files import MASKS_JSON, frame_record, masks_document, png_name
from models.video import DecodedFrame, VideoInfo, VideoWriter, clock_for, overlay
from models.xmem.config import XMemConfig
from server.api.deps import read_upload
from server.api.errors import ApiError
from server.jobs.runner import JobIO, NoFrames, audio_of, frames_of
from server.jobs.store import Job
from server.scheduler import Priority
from server.scheduler.drive import retrying
from server.sessions.store import SessionCore
from server.state import ServerState
from server.tasks.segmentation.masks import decode_index_png, encode_index_png
from server.tasks.segmentation.memory import BUDGET_HINT
from server.tasks.segmentation.service import SegmentationService
from server.tasks.segmentation.session import DEFAULT_SIDE, PendingMask, SegmentationSession
from server.tasks.segmentation.step import run_frame


class SegmentationJobForm(BaseModel):
    """The fields of a segmentation clip job."""

    mask: UploadFile | None = Field(None, description="segment: index PNG of the first frame")
    mask_frame: int = Field(0, ge=0, le=10_000_000, description="segment: the frame the mask belongs to")
    processing_size: int | None = Field(
        None, ge=64, le=2160, description="segment: shorter side (default 480, never upscaled)"
    )
    output: Literal["zip", "video"] = Field("zip", description="segment: masks zip or overlay video")


@dataclass(frozen=True)
class SegmentationParams:
    """What a segmentation job asked for."""

    mask: bytes  # index PNG for ``mask_frame``, as uploaded (decoded when the job starts)
    mask_frame: int  # the frame the mask belongs to; earlier frames come back empty
    processing_size: int | None  # shorter side frames are resized to (None: as given)
    output: Literal["zip", "video"]  # index PNGs + COCO RLE in a zip, or an overlay video
    objects: tuple[int, ...]  # the ids in the mask: what the job tracks, sized into its reservation


async def job_params(
    state: ServerState, service: SegmentationService, form: SegmentationJobForm, info: VideoInfo, job_id: str
) -> SegmentationParams:
    """The job's parameters, its mask checked against the video; its memory reserved."""
    if form.mask is None:
        raise ApiError(422, "invalid_request", "a segment job needs a mask: an index PNG of its first frame")
    data = await read_upload(state, form.mask, "the mask")
    ids = await asyncio.to_thread(_mask_ids, data, info)
    if not ids:
        raise ApiError(422, "empty_mask", "the mask has no object: every pixel is background (0)")
    if len(ids) > state.settings.max_objects:
        raise ApiError(
            422, "too_many_objects", f"the mask has {len(ids)} objects; the server tracks at most "
            f"{state.settings.max_objects} (VIDSERVE_MAX_OBJECTS)",
        )  # fmt: skip
    if info.frames is not None and form.mask_frame >= info.frames:
        raise ApiError(
            422, "invalid_argument", f"mask_frame {form.mask_frame} is past the video's {info.frames} frames"
        )
    size = form.processing_size or min(DEFAULT_SIDE, info.height, info.width)
    params = SegmentationParams(data, form.mask_frame, size, form.output, tuple(ids))
    bound = service.memory_bound(XMemConfig(), (info.height, info.width), size, len(ids))
    state.budget.reserve(job_id, bound, BUDGET_HINT)
    return params


def _mask_ids(data: bytes, info: VideoInfo) -> list[int]:
    """The object ids in an index PNG the size of the video (MaskError → 4xx)."""
    index = decode_index_png(data, (info.height, info.width))  # uint8 H×W
    return [int(i) for i in np.unique(index) if i != 0]


async def run_segmentation(state: ServerState, job: Job, service: SegmentationService) -> None:
    """Masks for every frame from the one given: a zip of index PNGs and COCO RLE, or an
    overlay video."""
    params = job.params
    assert isinstance(params, SegmentationParams)
    mask = decode_index_png(params.mask, (job.info.height, job.info.width))  # uint8 H×W ids
    video = SegmentationSession(
        core=SessionCore(job.id, time.time(), time.monotonic()),  # why its id: the job owns the rows
        model=service.model,
        xmem=service.fresh(XMemConfig()),
        processing_size=params.processing_size,
        max_objects=len(params.objects),
        output_format="png",
        probabilities=False,
        reserved_bytes=0,
    )
    io = JobIO(job)
    sink: _MaskSink = _ZipSink(job, params.objects) if params.output == "zip" else _OverlaySink(job)
    await io.run(sink.open)
    try:
        async with aclosing(frames_of(job, io)) as frames:
            async for frame in frames:
                index_mask = await _segment(state, video, frame, mask, params)
                await io.run(sink.add, frame, index_mask)
                job.frames_done += 1
        if job.frames_done <= params.mask_frame:  # why: containers like MKV declare no count
            raise NoFrames(f"mask_frame {params.mask_frame} is past the video's {job.frames_done} frames")
        await io.run(sink.finish)
    except BaseException:
        await io.run(sink.abort)
        raise
    finally:
        await io.close()
    job.result, job.media_type = sink.path, sink.media_type


async def _segment(
    state: ServerState,
    video: SegmentationSession,
    frame: DecodedFrame,
    mask: np.ndarray,
    params: SegmentationParams,
) -> np.ndarray:
    """frame → uint8 H×W ids; frames before the mask's frame have no objects yet."""
    is_before_mask = frame.index < params.mask_frame
    if is_before_mask:
        return np.zeros(frame.rgb.shape[:2], np.uint8)
    given = PendingMask(mask, None) if frame.index == params.mask_frame else None

    async def attempt() -> np.ndarray:
        return (await run_frame(state, video, frame.rgb, given, Priority.BATCH)).index_mask

    return await retrying(attempt)


class _MaskSink(Protocol):
    """Where a segmentation job's masks go; every method runs in the job's thread."""

    path: Path  # the result file, complete once ``finish`` returns
    media_type: str  # its content type

    def open(self) -> None: ...
    def add(self, frame: DecodedFrame, index_mask: np.ndarray) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class _ZipSink:
    """The CLI's ``--out DIR`` layout, zipped: ``00000.png``... index PNGs and ``masks.json``
    (``models/mask_files.py``), so an editor's tooling reads either."""

    media_type = "application/zip"

    def __init__(self, job: Job, objects: tuple[int, ...]) -> None:
        self.path = job.folder / "masks.zip"
        self.job, self.objects = job, objects
        self.frames: list[dict[str, object]] = []

    def open(self) -> None:
        self.zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_DEFLATED)

    def add(self, frame: DecodedFrame, index_mask: np.ndarray) -> None:
        self.zip.writestr(png_name(frame.index), encode_index_png(index_mask))
        self.frames.append(frame_record(frame.index, frame.time_s, index_mask, self.objects))

    def finish(self) -> None:
        document = masks_document(self.job.filename, self.job.info, self.objects, self.frames)
        self.zip.writestr(MASKS_JSON, json.dumps(document))
        self.zip.close()

    def abort(self) -> None:
        self.zip.close()
        self.path.unlink(missing_ok=True)


class _OverlaySink:
    """The input video with each object's mask blended over it, audio unchanged."""

    media_type = "video/mp4"

    def __init__(self, job: Job) -> None:
        self.path = job.folder / "overlay.mp4"
        self.writer = VideoWriter(
            self.path,
            width=job.info.width,
            height=job.info.height,
            fps=job.info.fps,
            time_base=clock_for(job.info.fps, job.info.time_base),  # why: the source's pts, exactly
            audio_from=audio_of(job),
        )

    def open(self) -> None:
        self.writer.__enter__()

    def add(self, frame: DecodedFrame, index_mask: np.ndarray) -> None:
        self.writer.write(overlay(frame.rgb, index_mask), frame.time_s)

    def finish(self) -> None:
        self.writer.__exit__(None, None, None)

    def abort(self) -> None:
        self.writer.__exit__(RuntimeError, RuntimeError("job stopped"), None)
