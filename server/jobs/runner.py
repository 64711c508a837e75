"""What every clip job's run shares: decoding the upload (with its warnings) and a worker
thread for decoding and writing. Each task's runner (``Task.run_job``) pushes the frames
through the same step as live sessions, at ``Priority.BATCH``, retrying while the engine
queue is full (``server.scheduler.drive.retrying``), and writes its result.

Decoding and writing go through one worker thread per job, so a cancel never closes the
decoder or the writer while that thread is still inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

from models.video import WHOLE, DecodedFrame, Trim, VideoError, read_frames
from server.jobs.store import Job

T = TypeVar("T")


class JobIO:
    """The job's one worker thread for decoding and writing."""

    def __init__(self, job: Job) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=job.id)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        """Wait for the thread to finish what it is doing, then stop it."""
        await asyncio.to_thread(self._thread.shutdown, True)


class TooManyFrames(RuntimeError):
    """The video has more frames than its container said and the job limit allows."""


class NoFrames(RuntimeError):
    """The video's stream held no decodable frame, or none from the mask's frame on."""


class FrameSource:
    """The upload's decoded frames within ``trim``, read in the job's worker thread. More than
    ``job.frame_limit`` fails the job rather than cutting the result short; fewer than the
    container announced is a warning on the job (a cut file decodes without error, just short),
    and the frame count becomes the real one."""

    def __init__(self, job: Job, io: JobIO, trim: Trim = WHOLE) -> None:
        self.job, self.io = job, io
        self.reader = read_frames(job.source, trim)

    async def frames(self) -> AsyncGenerator[DecodedFrame, None]:
        job = self.job
        try:
            while (frame := await self.io.run(_next, self.reader, job)) is not None:
                if frame.index >= job.frame_limit:
                    raise TooManyFrames(
                        f"the video has more than {job.frame_limit} frames (VIDSERVE_MAX_JOB_FRAMES)"
                    )
                yield frame
            if self.reader.frames == 0:
                raise NoFrames("the video decoded to no frames")
            job.frames_total = self.reader.frames  # why: the container's count was an estimate
            shortfall = self.reader.shortfall(job.info)
            if shortfall is not None:
                job.warnings.append(as_named(shortfall, job))
        finally:
            await self.io.run(self.reader.close)

    def end_s(self, last: DecodedFrame) -> float:
        """Where the decoded part ends: its last packet's end, within the trim."""
        end = self.reader.end_s
        if end is None:
            end = last.time_s + float(1 / self.job.info.fps)
        trim_end = self.reader.trim.end_s
        return end if trim_end is None else min(end, trim_end)


async def frames_of(job: Job, io: JobIO) -> AsyncGenerator[DecodedFrame, None]:
    """Every frame of the upload (see ``FrameSource``)."""
    async with aclosing(FrameSource(job, io).frames()) as frames:
        async for frame in frames:
            yield frame


def as_named(text: str, job: Job) -> str:
    """A message about the upload, naming it as the client did, never by the server's path."""
    name = job.filename[:200]
    return text.replace(str(job.source), name).replace(job.source.name, name)


def _next(frames: Iterator[DecodedFrame], job: Job) -> DecodedFrame | None:
    """The next frame; a decoding error names the upload as the client did, not by its path."""
    try:
        return next(frames, None)
    except VideoError as exc:
        raise VideoError(as_named(str(exc), job)) from exc


def audio_of(job: Job) -> Path | None:
    """The upload, when it has audio to copy into the result."""
    return job.source if job.info.has_audio else None
