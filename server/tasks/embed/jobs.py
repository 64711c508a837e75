"""Embed clip jobs: a whole video through the task's one step (``step.py``), as a stream of
its own at ``Priority.BATCH``; the result is the JSON ``POST /v1/clips`` answers."""

from __future__ import annotations

import functools
import json
import time
from contextlib import aclosing

from pydantic import Field

from models.video import VideoInfo
from models.videomae.inference import ClipInputError, Window
from server.jobs.runner import JobIO, frames_of
from server.jobs.store import Job
from server.scheduler import Priority
from server.scheduler.drive import retrying
from server.sessions.store import SessionCore
from server.state import ServerState
from server.tasks.embed.service import EmbedService
from server.tasks.embed.session import MAX_TOP_K, WindowFields
from server.tasks.embed.step import new_stream, step
from server.tasks.embed.wire import clip_answer, too_short

RESULT_NAME = "result.json"


class EmbedJobForm(WindowFields):
    """The fields of an embed clip job (the same as ``POST /v1/clips``)."""

    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="embed: labels per window")


async def job_params(
    state: ServerState, service: EmbedService, form: EmbedJobForm, info: VideoInfo, job_id: str
) -> EmbedJobForm:
    """The job's windowing, checked against the model and the video; its ring reserved."""
    probe = new_stream(service, form, SessionCore(job_id, time.time(), time.monotonic()))
    if info.frames is not None and info.frames < probe.spec.span:
        raise ClipInputError("clip_too_short", too_short(probe.spec, info.frames))
    state.budget.reserve(job_id, probe.reserved_bytes)
    return form


async def run_embed(job: Job, service: EmbedService) -> None:
    """Every window of the video, then the JSON of its segments and their mean."""
    form = job.params
    assert isinstance(form, EmbedJobForm)
    # why the job's id: the job owns the rows, and a cancel cancels them
    stream = new_stream(service, form, SessionCore(job.id, time.time(), time.monotonic()))
    windows: list[Window] = []
    io = JobIO(job)
    try:
        async with aclosing(frames_of(job, io)) as frames:
            async for frame in frames:
                attempt = functools.partial(
                    step, service, stream, frame.rgb, frame.index, frame.time_s, Priority.BATCH
                )
                window = await retrying(attempt)
                if window is not None:
                    windows.append(window)
                job.frames_done += 1
    finally:
        await io.close()
    if not windows:
        raise ClipInputError("clip_too_short", too_short(stream.spec, job.frames_done))
    answer = clip_answer(service.model, stream.spec, job.frames_done, windows, stream.top_k)
    out = job.folder / RESULT_NAME
    out.write_text(json.dumps(answer))
    job.result, job.media_type = out, "application/json"
