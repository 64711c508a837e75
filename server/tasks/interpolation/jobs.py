"""Interpolation clip jobs: a whole video through the task's one step (``step.py``), as a
stream of its own at ``Priority.BATCH``: originals plus N-1 in-between frames per pair,
N× the frame rate, audio unchanged."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from fractions import Fraction

from models.rife.inference import check_scale, timesteps_for_factor
from models.video import DecodedFrame, VideoInfo, VideoWriter, clock_for
from server.api.errors import ApiError
from server.jobs.runner import JobIO, audio_of, frames_of, retrying
from server.jobs.store import Job
from server.scheduler import Priority
from server.sessions.store import SessionCore
from server.settings import Settings
from server.tasks.interpolation.forms import InterpolationJobForm, parse_threshold
from server.tasks.interpolation.service import InterpolationService
from server.tasks.interpolation.session import InterpolationSession
from server.tasks.interpolation.step import step


@dataclass(frozen=True)
class InterpolationParams:
    """What an interpolation job asked for."""

    factor: int  # N× frame rate: N-1 frames between each pair
    scale: float  # RIFE's flow scale: 0.5 for 4K
    scene_change_threshold: float | None  # SSIM below which a pair is a cut (None: never)
    max_output_pixels: int  # VIDSERVE_MAX_OUTPUT_PIXELS when it was submitted


def job_params(
    settings: Settings, service: InterpolationService, form: InterpolationJobForm, info: VideoInfo
) -> InterpolationParams:
    check_scale(form.scale)
    rows = len(timesteps_for_factor(form.factor))
    service.check_output(info.height, info.width, form.scale, rows, settings.max_output_pixels)
    if rows > settings.max_queue_size:
        raise ApiError(
            422, "too_many_rows", f"factor {form.factor} needs {rows} rows per frame, more than the engine "
            f"queue of {settings.max_queue_size} (VIDSERVE_MAX_QUEUE_SIZE)",
        )  # fmt: skip
    threshold = parse_threshold(form.scene_change_threshold)
    return InterpolationParams(form.factor, form.scale, threshold, settings.max_output_pixels)


async def run_interpolation(job: Job, service: InterpolationService) -> None:
    """Originals plus N-1 in-between frames per pair: N× the frame rate, audio unchanged."""
    params = job.params
    assert isinstance(params, InterpolationParams)
    out = job.folder / "result.mp4"
    io = JobIO(job)
    writer = VideoWriter(
        out,
        width=job.info.width,
        height=job.info.height,
        fps=job.info.fps * params.factor,
        # why the source clock over N: every in-between of a pair lands on a whole tick
        time_base=clock_for(job.info.fps * params.factor, job.info.time_base / params.factor),
        audio_from=audio_of(job),
    )
    await io.run(writer.__enter__)
    try:
        async with aclosing(frames_of(job, io)) as frames:
            await _interpolate_all(job, service, io, writer, frames, params)
        await io.run(writer.__exit__, None, None, None)
    except BaseException as exc:
        await io.run(writer.__exit__, type(exc), exc, exc.__traceback__)
        raise
    finally:
        await io.close()
    job.result, job.media_type = out, "video/mp4"


async def _interpolate_all(
    job: Job,
    service: InterpolationService,
    io: JobIO,
    writer: VideoWriter,
    frames: AsyncGenerator[DecodedFrame, None],
    params: InterpolationParams,
) -> None:
    """Each original, preceded by the in-between frames of the pair it ends."""
    stream = InterpolationSession(
        core=SessionCore(job.id, time.time(), time.monotonic()),  # why its id: the job owns the rows
        model=service.model,
        timesteps=timesteps_for_factor(params.factor),
        scale=params.scale,
        scene_change_threshold=params.scene_change_threshold,
    )
    previous_s: float | None = None
    limit = params.max_output_pixels
    async for frame in frames:
        attempt = functools.partial(step, service, stream, frame.rgb, limit, Priority.BATCH)
        results = await retrying(attempt)
        for result in results:
            assert previous_s is not None
            between = previous_s + result.timestep * (frame.time_s - previous_s)
            await io.run(writer.write, result.frame, between)
        await io.run(writer.write, frame.rgb, frame.time_s)
        previous_s = frame.time_s
        job.frames_done += 1
    if stream.previous is not None and previous_s is not None:
        await _hold_last(io, writer, stream, previous_s, params.factor, job.info.fps)


async def _hold_last(
    io: JobIO, writer: VideoWriter, stream: InterpolationSession, time_s: float, factor: int, fps: Fraction
) -> None:
    """The last frame over its own N-1 slots, as the CLI does: the result keeps the input's
    duration (and its audio's) and has exactly N× its frames."""
    assert stream.previous is not None
    for k in range(1, factor):
        await io.run(writer.write, stream.previous.pixels, time_s + float(k / (fps * factor)))
