"""``/v1/jobs``: clip jobs for editors. Upload a whole video, poll its progress, download
the result. Jobs run through the same schedulers as live sessions, at a lower priority,
and last only as long as the process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from models.rife.inference import check_scale, timesteps_for_factor
from models.video import VideoError, VideoInfo, probe
from models.xmem.config import XMemConfig
from server.api.deps import JOBS_PATH, State, read_upload
from server.api.errors import ApiError
from server.api.interpolate import parse_threshold
from server.api.sessions import DEFAULT_SIDE
from server.jobs.runner import run_interpolation, run_segmentation
from server.jobs.store import InterpolationParams, Job, JobParams, JobWork, SegmentationParams
from server.masks import decode_index_png
from server.state import ServerState

router = APIRouter(prefix=JOBS_PATH, tags=["jobs"])

COPY_CHUNK = 1 << 20  # why: large enough to copy an upload quickly, small enough to stay flat in memory


@router.post("", status_code=202, summary="Submit a clip job")
async def submit_job(
    state: State,
    video: Annotated[UploadFile, File(description="the clip: any container and codec FFmpeg reads")],
    task: Annotated[Literal["interpolate", "segment"], Form()],
    model: Annotated[str | None, Form(description="served model (default: the first of the task)")] = None,
    factor: Annotated[int, Form(ge=2, le=64, description="interpolate: N× frame rate")] = 2,
    scale: Annotated[float, Form(description="interpolate: flow scale, 0.5 for 4K")] = 1.0,
    scene_change_threshold: Annotated[str | None, Form(description="interpolate: SSIM cut or 'none'")] = None,
    mask: Annotated[UploadFile | None, File(description="segment: index PNG of the first frame")] = None,
    mask_frame: Annotated[int, Form(ge=0, description="segment: the frame the mask belongs to")] = 0,
    processing_size: Annotated[
        int | None, Form(ge=64, le=2160, description="segment: shorter side (default 480, never upscaled)")
    ] = None,
    output: Annotated[
        Literal["zip", "video"], Form(description="segment: masks zip or overlay video")
    ] = "zip",
) -> JSONResponse:
    service_model = _service_model(state, task, model)
    job_id, folder = state.jobs.new_folder()
    try:
        source = await _save_upload(state, video, folder)
        info = await _probe(source)
        frames_total = _frames_total(state, info)
        params: JobParams
        if task == "interpolate":
            params = _interpolation_params(state, factor, scale, scene_change_threshold)
        else:
            params = await _segmentation_params(state, info, mask, mask_frame, processing_size, output)
            state.budget.reserve(job_id, _reservation(state, service_model, info, params))
        limit = state.settings.max_job_frames
        name = Path(video.filename or source.name).name
        job = Job(job_id, task, service_model, params, folder, source, name, info, frames_total, limit)
        state.jobs.start(job, _work(state))
    except BaseException:
        state.budget.release(job_id)
        state.jobs.abandon(job_id, folder)
        raise
    url = f"/v1/jobs/{job_id}"
    return JSONResponse(job.public(), status_code=202, headers={"Location": url})


@router.get("", summary="Every job this process holds")
async def list_jobs(state: State) -> dict[str, object]:
    return {"jobs": [job.public() for job in state.jobs.all()]}


@router.get("/{job_id}", summary="A job's state, progress and error")
async def get_job(job_id: str, state: State) -> dict[str, object]:
    return state.jobs.get(job_id).public()


@router.get("/{job_id}/result", summary="Download a finished job's result", response_model=None)
async def get_result(job_id: str, state: State) -> FileResponse:
    job = state.jobs.get(job_id)
    if job.result is None:
        raise ApiError(409, f"job_{job.state.value}", _not_done(job))
    return FileResponse(job.result, media_type=job.media_type, filename=f"{job.id}-{job.result.name}")


@router.delete("/{job_id}", summary="Cancel a job, or delete a finished one and its result")
async def delete_job(job_id: str, state: State) -> dict[str, object]:
    job = await state.jobs.delete(job_id)
    return job.public()


def _not_done(job: Job) -> str:
    if job.error:
        return f"job {job.id} is {job.state.value}: {job.error}"
    return (
        f"job {job.id} is {job.state.value} ({job.frames_done} of {job.frames_total} frames); try again later"
    )


# ------------------------------------------------------------------------- admission


def _service_model(state: ServerState, task: str, model: str | None) -> str:
    if not state.accepting:
        raise ApiError(503, "not_ready", "the server is shutting down")
    if task == "interpolate":
        return state.interpolation_service(model).engine.model
    return state.segmentation_service(model).model


async def _save_upload(state: ServerState, video: UploadFile, folder: Path) -> Path:
    """Copy the spooled upload into the job's folder, refusing more than the size bound."""
    suffix = Path(video.filename or "").suffix.lower()[:8] or ".bin"
    source = folder / f"source{suffix}"
    limit = state.settings.max_job_upload_bytes
    copied = await asyncio.to_thread(_copy_bounded, video.file, source, limit)
    if copied > limit:
        raise ApiError(413, "payload_too_large", f"the video is larger than {limit} bytes")
    if copied == 0:
        raise ApiError(422, "invalid_video", "the video file is empty")
    return source


def _copy_bounded(stream: BinaryIO, target: Path, limit: int) -> int:
    """Copy at most ``limit`` + 1 bytes: enough to tell the upload was too large."""
    copied = 0
    with target.open("wb") as out:
        while copied <= limit:
            chunk = stream.read(COPY_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            copied += len(chunk)
    return copied


async def _probe(source: Path) -> VideoInfo:
    try:
        return await asyncio.to_thread(probe, source)
    except VideoError as exc:
        raise ApiError(422, "invalid_video", str(exc)) from exc


def _frames_total(state: ServerState, info: VideoInfo) -> int:
    """Frames the job will process: the container's count, or its duration × fps."""
    limit = state.settings.max_job_frames
    if info.width * info.height > state.settings.max_pixels:
        raise ApiError(
            413, "image_too_large", f"frames are {info.width}×{info.height}, more than "
            f"VIDSERVE_MAX_PIXELS={state.settings.max_pixels}",
        )  # fmt: skip
    estimate = info.frames or round((info.duration_s or 0) * float(info.fps))
    if estimate > limit:
        raise ApiError(
            413, "too_many_frames", f"the video has about {estimate} frames; jobs take at most {limit} "
            "(VIDSERVE_MAX_JOB_FRAMES)",
        )  # fmt: skip
    if estimate <= 0:
        raise ApiError(422, "invalid_video", "the video has no frames")
    return estimate


def _interpolation_params(
    state: ServerState, factor: int, scale: float, threshold: str | None
) -> InterpolationParams:
    check_scale(scale)
    rows = len(timesteps_for_factor(factor))
    if rows > state.settings.max_queue_size:
        raise ApiError(
            422, "too_many_rows", f"factor {factor} needs {rows} rows per frame, more than the engine "
            f"queue of {state.settings.max_queue_size} (VIDSERVE_MAX_QUEUE_SIZE)",
        )  # fmt: skip
    return InterpolationParams(factor, scale, parse_threshold(threshold))


async def _segmentation_params(
    state: ServerState,
    info: VideoInfo,
    mask: UploadFile | None,
    mask_frame: int,
    processing_size: int | None,
    output: Literal["zip", "video"],
) -> SegmentationParams:
    if mask is None:
        raise ApiError(422, "invalid_request", "a segment job needs a mask: an index PNG of its first frame")
    data = await read_upload(state, mask, "the mask")
    ids = await asyncio.to_thread(_mask_ids, data, info)
    if not ids:
        raise ApiError(422, "empty_mask", "the mask has no object: every pixel is background (0)")
    if len(ids) > state.settings.max_objects:
        raise ApiError(
            422, "too_many_objects", f"the mask has {len(ids)} objects; the server tracks at most "
            f"{state.settings.max_objects} (VIDSERVE_MAX_OBJECTS)",
        )  # fmt: skip
    if info.frames is not None and mask_frame >= info.frames:
        raise ApiError(
            422, "invalid_argument", f"mask_frame {mask_frame} is past the video's {info.frames} frames"
        )
    size = processing_size or min(DEFAULT_SIDE, info.height, info.width)
    return SegmentationParams(data, mask_frame, size, output, tuple(ids))


def _mask_ids(data: bytes, info: VideoInfo) -> list[int]:
    """The object ids in an index PNG the size of the video (MaskError → 4xx)."""
    index = decode_index_png(data, (info.height, info.width))  # uint8 H×W
    return [int(i) for i in np.unique(index) if i != 0]


def _reservation(state: ServerState, model: str, info: VideoInfo, params: SegmentationParams) -> int:
    """The job's worst-case XMem memory, exact now that the frame size is known."""
    service = state.segmentation[model]
    hw = (info.height, info.width)
    return service.memory_bound(XMemConfig(), hw, params.processing_size, len(params.objects))


def _work(state: ServerState) -> JobWork:
    async def work(job: Job) -> None:
        if job.task == "interpolate":
            await run_interpolation(job, state.interpolation_service(job.model))
        else:
            await run_segmentation(job, state.segmentation_service(job.model))

    return work
