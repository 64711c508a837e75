"""``/v1/jobs``: clip jobs for editors. Upload a whole video, poll its progress, download
the result. Jobs run through the same schedulers as live sessions, at a lower priority,
and last only as long as the process. What a job does is its task's (``Task.job_params``,
``Task.run_job``); the form's fields are the tasks' ``job_form`` fields together."""

# why no `from __future__ import annotations`: FastAPI reads the routes' parameter types at
# run time, and the body and form types are built per app from its tasks (locals, not globals)

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from models.video import VideoError, VideoInfo, probe
from server.access import Caller, QuotaExceeded
from server.api.deps import JOBS_PATH, CallerDep, State
from server.api.errors import ApiError
from server.api.views import JobsView, JobView
from server.jobs.store import Job, JobWork
from server.media import check_frame_size
from server.state import ServerState
from server.tasks.base import Task

COPY_CHUNK = 1 << 20  # why: large enough to copy an upload quickly, small enough to stay flat in memory


class JobSubmitBase(BaseModel):
    """The fields of ``POST /v1/jobs`` every job has."""

    model_config = ConfigDict(extra="ignore")

    video: UploadFile = Field(description="the clip: any container and codec FFmpeg reads")
    task: str = Field(description="what to run on it")
    model: str | None = Field(None, description="served model (default: the first of the task)")


def job_form(tasks: Sequence[Task[Any, Any]]) -> type[JobSubmitBase]:
    """The form of ``POST /v1/jobs``: the video, its task and model, and every task's fields
    (a task reads only its own; field names are unique across tasks)."""
    names = tuple(t.name for t in tasks)
    fields: dict[str, Any] = {"task": (Literal[names], Field(description="what to run on it"))}
    for task in tasks:
        for name, info in task.job_form.model_fields.items():
            if name in fields or name in JobSubmitBase.model_fields:
                raise ValueError(f"job form field {name!r} of task {task.name!r} is taken by another")
            fields[name] = (info.annotation, info)
    return create_model("JobSubmit", __base__=JobSubmitBase, **fields)


def build_router(tasks: Sequence[Task[Any, Any]]) -> APIRouter:
    router = APIRouter(prefix=JOBS_PATH, tags=["jobs"])
    JobSubmit = job_form(tasks)

    @router.post("", status_code=202, summary="Submit a clip job", response_model=JobView)
    async def submit_job(state: State, form: Annotated[JobSubmit, Form()], caller: CallerDep) -> JSONResponse:  # type: ignore[valid-type]
        """Multipart: the `video` (any container and codec FFmpeg reads), its `task`, the
        `model` (default: the task's first) and the task's own fields (the README's "Clip
        jobs"). Answers 202 with the queued job and a `Location` header: poll it, then fetch
        `result_url`. Errors: 413 for a video over `VIDSERVE_MAX_JOB_UPLOAD_BYTES`, with more
        frames than `VIDSERVE_MAX_JOB_FRAMES` or frames over `VIDSERVE_MAX_PIXELS`; 422
        `invalid_video` (empty, unreadable, no frames) or a field the task refuses; 429
        `too_many_jobs` or `quota_exceeded`; 503 while the model loads or the server drains."""
        submitted = _submitted(form)
        task = state.task_named(submitted.task)
        service = _service(state, task, submitted.model)
        own = task.job_form.model_validate({n: getattr(submitted, n) for n in task.job_form.model_fields})
        _check_job_quota(state, caller)
        job = await _submit(state, task, service, submitted.video, own, caller)
        return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @router.get("", summary="The caller's jobs", response_model=JobsView)
    async def list_jobs(state: State, caller: CallerDep) -> dict[str, object]:
        """Every job the caller's key holds (every job, on a server without keys), as
        `GET /v1/jobs/{id}` shows each. A finished job stays listed until its result expires
        (`VIDSERVE_JOB_RESULT_TTL_S`) or is deleted; none outlives the process."""
        return {"jobs": [job.public() for job in state.jobs.all(caller)]}

    @router.get("/{job_id}", summary="A job's state, progress and error", response_model=JobView)
    async def get_job(job_id: str, state: State, caller: CallerDep) -> dict[str, object]:
        """The job's `state` (`queued`, `running`, `done`, `failed` or `cancelled`), its
        `progress` (`frames_done` of `frames_total`, frames/s, ETA), its `error`, the probed
        `video`, and `result_url` once done. 404 `unknown_job` (or another key's, or one whose
        result expired)."""
        return state.jobs.get(job_id, caller).public()

    @router.get("/{job_id}/result", summary="Download a finished job's result", response_model=None)
    async def get_result(job_id: str, state: State, caller: CallerDep) -> FileResponse:
        """The finished job's file, as an attachment whose media type says what it is: a
        video, a zip of masks, or JSON, by task. 409 `job_queued`, `job_running`, `job_failed`
        or `job_cancelled` until there is a result (a failed job's names its error); 404
        `unknown_job` once the job was deleted or its result expired."""
        job = state.jobs.get(job_id, caller)
        if job.result is None:
            raise ApiError(409, f"job_{job.state.value}", _not_done(job))
        return FileResponse(job.result, media_type=job.media_type, filename=f"{job.id}-{job.result.name}")

    @router.delete(
        "/{job_id}", summary="Cancel a job, or delete a finished one and its result", response_model=JobView
    )
    async def delete_job(job_id: str, state: State, caller: CallerDep) -> dict[str, object]:
        """Cancel a queued or running job (its queued rows are dropped between batches), or
        forget a finished one; either way its upload and result are deleted at once and its
        place in the key's quota frees. Answers the job as it ended. 404 `unknown_job`."""
        job = await state.jobs.delete(job_id, caller)
        return job.public()

    return router


def _submitted(form: object) -> JobSubmitBase:
    assert isinstance(form, JobSubmitBase)
    return form


def _not_done(job: Job) -> str:
    if job.error:
        return f"job {job.id} is {job.state.value}: {job.error}"
    return (
        f"job {job.id} is {job.state.value} ({job.frames_done} of {job.frames_total} frames); try again later"
    )


# ------------------------------------------------------------------------- admission


def _service(state: ServerState, task: Task[Any, Any], model: str | None) -> Any:
    if not state.accepting:
        raise ApiError(503, "not_ready", "the server is shutting down")
    return state.service(model, task)


def _check_job_quota(state: ServerState, caller: Caller) -> None:
    """A key holding all the jobs it may waits until one's result expires (or is deleted)."""
    held = state.jobs.owned_by(caller.name)
    if caller.max_jobs is not None and held >= caller.max_jobs:
        raise QuotaExceeded(
            f"key {caller.name!r} holds {held} jobs, its quota (max_jobs); a finished job holds its "
            "place until its result expires or is deleted (DELETE /v1/jobs/{id})",
            state.jobs.next_free_s(caller.name),
        )


async def _submit(
    state: ServerState, task: Task[Any, Any], service: Any, video: UploadFile, form: BaseModel, caller: Caller
) -> Job:
    """Hold a place, copy and probe the upload, let the task check it and take its parameters
    (and reservations), then start the job; anything refused leaves nothing behind."""
    job_id, folder = state.jobs.new_folder(caller.name)
    try:
        source = await _save_upload(state, video, folder)
        name = Path(video.filename or source.name).name
        info = await _probe(source, name)
        frames_total = _frames_total(state, info)
        params = await task.job_params(state, service, form, info, job_id)
        limit = state.settings.max_job_frames
        job = Job(job_id, task.name, service.model, params, folder, source, name, info, frames_total, limit)
        job.owner = caller.name
        state.jobs.start(job, _work(state, task))
    except BaseException:
        state.budget.release(job_id)
        state.jobs.abandon(job_id, folder)
        raise
    return job


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


async def _probe(source: Path, name: str) -> VideoInfo:
    try:
        return await asyncio.to_thread(probe, source)
    except VideoError as exc:
        raise ApiError(422, "invalid_video", as_named(exc, source, name)) from exc


def as_named(exc: Exception, source: Path, name: str) -> str:
    """An error about the upload, naming it as the client did, never by the server's path."""
    return str(exc).replace(str(source), name[:200] or "the video")


def _frames_total(state: ServerState, info: VideoInfo) -> int:
    """Frames the job will process: the container's count, or its duration × fps."""
    limit = state.settings.max_job_frames
    check_frame_size(info.width, info.height, state.settings.max_pixels)
    estimate = info.frames or round((info.duration_s or 0) * float(info.fps))
    if estimate > limit:
        raise ApiError(
            413, "too_many_frames", f"the video has about {estimate} frames; jobs take at most {limit} "
            "(VIDSERVE_MAX_JOB_FRAMES)",
        )  # fmt: skip
    if estimate <= 0:
        raise ApiError(422, "invalid_video", "the video has no frames")
    return estimate


def _work(state: ServerState, task: Task[Any, Any]) -> JobWork:
    async def work(job: Job) -> None:
        await task.run_job(state, job, state.service(job.model, task))

    return work
