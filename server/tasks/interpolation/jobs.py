"""Interpolation clip jobs: a whole video through the task's one step (``step.py``), as a
stream of its own at ``Priority.BATCH``, timed as ``models/timeline.py`` says: originals plus
N-1 in-betweens per pair (``factor``), or constant-rate output with each frame at its own
timestep (``fps``, repeated source frames dropped first); audio unchanged, trimmed with the
clip."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from models.rife.inference import InterpolationInputError, check_scale, timesteps_for_factor
from models.timeline import Deduplicator, FactorTimeline, RateTimeline, Timeline, rate_of
from models.video import WHOLE, DecodedFrame, Trim, VideoError, VideoInfo, VideoWriter, clock_for
from server.api.errors import ApiError
from server.jobs.runner import FrameSource, JobIO, audio_of
from server.jobs.store import Job
from server.scheduler import Priority
from server.scheduler.drive import retrying
from server.sessions.store import SessionCore
from server.settings import Settings
from server.tasks.interpolation.forms import InterpolationJobForm, parse_threshold
from server.tasks.interpolation.service import InterpolationService
from server.tasks.interpolation.session import InterpolationSession
from server.tasks.interpolation.step import step

MAX_FPS = Fraction(1000)  # why: as the CLI's; past this no player shows the frames


@dataclass(frozen=True)
class InterpolationParams:
    """What an interpolation job asked for."""

    factor: int  # N× frame rate: N-1 frames between each pair (when fps is None)
    fps: Fraction | None  # constant output rate; None: N× the source's, originals at their times
    dedup: bool  # drop source frames that repeat the previous one
    trim: Trim  # the part of the clip read (and of its audio copied)
    scale: float  # RIFE's flow scale: 0.5 for 4K
    scene_change_threshold: float | None  # SSIM below which a pair is a cut (None: never)
    max_output_pixels: int  # VIDSERVE_MAX_OUTPUT_PIXELS when it was submitted
    chunk: int  # in-betweens run at once: what fits the queue and the output bound

    @property
    def per_pair(self) -> bool:
        """Each pair gets its own timesteps: a target rate, or a regular timeline for dedup."""
        return self.fps is not None or self.dedup

    def output_fps(self, info: VideoInfo) -> Fraction:
        return self.fps if self.fps is not None else info.fps * self.factor

    def timeline(self, info: VideoInfo) -> Timeline:
        if self.per_pair:
            return RateTimeline(self.output_fps(info), origin=self.trim.start_s)
        return FactorTimeline(self.factor, info.fps, origin=self.trim.start_s)


def job_params(
    settings: Settings, service: InterpolationService, form: InterpolationJobForm, info: VideoInfo
) -> InterpolationParams:
    """A factor's N-1 in-betweens must fit at once, as on a live stream; a rate's pairs need
    from none to dozens (a variable-rate source's long gaps), so they run in chunks."""
    check_scale(form.scale)
    fps = _rate(form.fps)
    rows = len(timesteps_for_factor(form.factor)) if fps is None else 1
    limit = settings.max_output_pixels
    service.check_output(info.height, info.width, form.scale, rows, limit)
    if rows > settings.max_queue_size:
        raise ApiError(
            422, "too_many_rows", f"{rows} rows per frame are more than the engine queue of "
            f"{settings.max_queue_size} (VIDSERVE_MAX_QUEUE_SIZE)",
        )  # fmt: skip
    padded_h, padded_w = service.spec.padded_size(info.height, info.width, form.scale)
    chunk = max(1, min(settings.max_queue_size, limit // (padded_h * padded_w)))
    threshold = parse_threshold(form.scene_change_threshold)
    dedup = fps is not None if form.dedup is None else form.dedup
    return InterpolationParams(form.factor, fps, dedup, _trim(form), form.scale, threshold, limit, chunk)


def _rate(text: str | None) -> Fraction | None:
    if text is None or not text.strip():
        return None
    try:
        fps = rate_of(text)
    except ValueError as exc:
        raise InterpolationInputError(f"fps: {exc}") from None
    if fps > MAX_FPS:
        raise InterpolationInputError(f"fps must be at most {MAX_FPS}, got {text!r}")
    return fps


def _trim(form: InterpolationJobForm) -> Trim:
    try:
        return Trim(form.start or 0.0, form.end)
    except VideoError as exc:
        raise InterpolationInputError(f"start/end: {exc}") from None


async def run_interpolation(job: Job, service: InterpolationService) -> None:
    """The clip, retimed as its parameters say; the result keeps the input's duration."""
    params = job.params
    assert isinstance(params, InterpolationParams)
    out = job.folder / "result.mp4"
    if params.trim != WHOLE:  # why: progress counts the trimmed part's frames, not the clip's
        span = (params.trim.end_s or job.info.duration_s or 0.0) - params.trim.start_s
        job.frames_total = max(1, min(job.frames_total, round(span * float(job.info.fps))))
    io = JobIO(job)
    writer = _writer(job, params, out)
    await io.run(writer.__enter__)
    try:
        source = FrameSource(job, io, params.trim)
        async with aclosing(source.frames()) as frames:
            await _Retimer(job, service, io, writer, params).run(frames, source)
        await io.run(writer.__exit__, None, None, None)
    except BaseException as exc:
        await io.run(writer.__exit__, type(exc), exc, exc.__traceback__)
        raise
    finally:
        await io.close()
    job.result, job.media_type = out, "video/mp4"


def _writer(job: Job, params: InterpolationParams, out: Path) -> VideoWriter:
    fps = params.output_fps(job.info)
    # why: at a target rate every frame is k/fps, a whole tick; with a factor, the source
    # clock over N puts every in-between of a pair on a whole tick
    steps = () if params.per_pair else (job.info.time_base / params.factor,)
    return VideoWriter(
        out,
        width=job.info.width,
        height=job.info.height,
        fps=fps,
        time_base=clock_for(fps, *steps),
        audio_from=audio_of(job),
        audio_trim=params.trim,
    )


class _Retimer:
    """Each kept source frame through the step; its pair's in-betweens and the frame itself
    written where the timeline puts them; the last frame held to the clip's end."""

    def __init__(
        self,
        job: Job,
        service: InterpolationService,
        io: JobIO,
        writer: VideoWriter,
        params: InterpolationParams,
    ) -> None:
        self.job, self.service, self.io, self.writer, self.params = job, service, io, writer, params
        self.timeline = params.timeline(job.info)
        self.dedup = Deduplicator() if params.dedup else None
        self.stream = InterpolationSession(
            core=SessionCore(job.id, time.time(), time.monotonic()),  # why its id: the job owns the rows
            model=service.model,
            timesteps=timesteps_for_factor(params.factor),
            scale=params.scale,
            scene_change_threshold=params.scene_change_threshold,
        )

    async def run(self, frames: AsyncGenerator[DecodedFrame, None], source: FrameSource) -> None:
        previous: DecodedFrame | None = None
        async for frame in frames:
            self.job.frames_done += 1
            is_repeat = self.dedup is not None and self.dedup.is_repeat(frame.rgb)
            if is_repeat:
                self.job.frames_dropped += 1
                continue
            await self._send(previous, frame)
            previous = frame
        if previous is not None:
            await self._hold(previous, source.end_s(previous))

    async def _send(self, previous: DecodedFrame | None, frame: DecodedFrame) -> None:
        pair = self.timeline.pair(previous.time_s if previous else None, frame.time_s)
        timesteps = pair.timesteps if self.params.per_pair else None
        limit = self.params.max_output_pixels
        attempt = functools.partial(
            step, self.service, self.stream, frame.rgb, limit, Priority.BATCH, timesteps, self.params.chunk
        )
        results = await retrying(attempt)
        for result, time_s in zip(results, pair.between_s, strict=True):
            await self.io.run(self.writer.write, result.frame, time_s)
        for time_s in pair.this_s:
            await self.io.run(self.writer.write, frame.rgb, time_s)

    async def _hold(self, last: DecodedFrame, end_s: float) -> None:
        """The last frame over the rest of its time: the result keeps the input's duration (and
        its audio's); with a factor, exactly N× the frames, as the CLI does."""
        for time_s in self.timeline.tail(last.time_s, end_s):
            await self.io.run(self.writer.write, last.rgb, time_s)
