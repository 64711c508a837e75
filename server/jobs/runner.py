"""How a clip job runs: decode the upload, push each frame through the same services as
live sessions (at ``Priority.BATCH``), and write the result.

Decoding and writing go through one worker thread per job, so a cancel never closes the
decoder or the writer while that thread is still inside it.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from models.mask_files import MASKS_JSON, frame_record, masks_document, png_name
from models.rife.inference import timesteps_for_factor
from models.video import DecodedFrame, VideoWriter, clock_for, overlay, read_frames
from models.xmem.config import XMemConfig
from models.xmem.inference_core import XMemState
from server.jobs.store import InterpolationParams, Job, SegmentationParams
from server.masks import decode_index_png, encode_index_png
from server.scheduler import Overloaded, Priority, ShuttingDown
from server.tasks.interpolation import InterpolationService, PreparedFrame
from server.tasks.segmentation import SegmentationService, Segmented

T = TypeVar("T")

# why: a job that finds its engine queue full waits and retries instead of failing; live
# sessions have their own bound, so this only happens when many jobs run at once
OVERLOADED_RETRY_S = 0.05


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


async def frames_of(job: Job, io: JobIO) -> AsyncGenerator[DecodedFrame, None]:
    """Yield the upload's decoded frames; more than ``job.frame_limit`` fails the job
    rather than cutting the result short."""
    frames: Iterator[DecodedFrame] = read_frames(job.source)
    try:
        while (frame := await io.run(next, frames, None)) is not None:
            if frame.index >= job.frame_limit:
                raise TooManyFrames(
                    f"the video has more than {job.frame_limit} frames (VIDSERVE_MAX_JOB_FRAMES)"
                )
            yield frame
        if job.frames_done == 0:
            raise NoFrames("the video decoded to no frames")
        job.frames_total = job.frames_done  # why: the container's count was an estimate
    finally:
        await io.run(_close, frames)


def _close(frames: Iterator[DecodedFrame]) -> None:
    close = getattr(frames, "close", None)
    if close is not None:
        close()


def _audio_of(job: Job) -> Path | None:
    """The upload, when it has audio to copy into the result."""
    return job.source if job.info.has_audio else None


async def _retrying(attempt: Callable[[], Any]) -> Any:
    """``attempt()`` again while the engine queue for jobs is full (not once it is stopping)."""
    while True:
        try:
            return await attempt()
        except ShuttingDown:
            raise
        except Overloaded:
            await asyncio.sleep(OVERLOADED_RETRY_S)


# ------------------------------------------------------------------------- interpolation


@dataclass
class _Previous:
    prepared: PreparedFrame  # the earlier frame of the next pair, padded once
    time_s: float  # its presentation time


async def run_interpolation(job: Job, service: InterpolationService) -> None:
    """Originals plus N-1 in-between frames per pair: N× the frame rate, audio unchanged."""
    params = job.params
    assert isinstance(params, InterpolationParams)
    timesteps = timesteps_for_factor(params.factor)
    out = job.folder / "result.mp4"
    io = JobIO(job)
    writer = VideoWriter(
        out,
        width=job.info.width,
        height=job.info.height,
        fps=job.info.fps * params.factor,
        # why the source clock over N: every in-between of a pair lands on a whole tick
        time_base=clock_for(job.info.fps * params.factor, job.info.time_base / params.factor),
        audio_from=_audio_of(job),
    )
    await io.run(writer.__enter__)
    try:
        async with aclosing(frames_of(job, io)) as frames:
            await _interpolate_all(job, service, io, writer, frames, timesteps)
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
    timesteps: list[float],
) -> None:
    """Each original, preceded by the in-between frames of the pair it ends."""
    params = job.params
    assert isinstance(params, InterpolationParams)
    previous: _Previous | None = None
    async for frame in frames:
        prepared = await asyncio.to_thread(service.prepare, frame.rgb, params.scale)
        if previous is not None:
            await _write_between(job, service, io, writer, previous, prepared, frame.time_s, timesteps)
        await io.run(writer.write, frame.rgb, frame.time_s)
        previous = _Previous(prepared, frame.time_s)
        job.frames_done += 1
    if previous is not None:
        await _hold_last(io, writer, previous, params.factor, job.info.fps)


async def _hold_last(io: JobIO, writer: VideoWriter, last: _Previous, factor: int, fps: Fraction) -> None:
    """The last frame over its own N-1 slots, as the CLI does: the result keeps the input's
    duration (and its audio's) and has exactly N× its frames."""
    for step in range(1, factor):
        await io.run(writer.write, last.prepared.pixels, last.time_s + float(step / (fps * factor)))


async def _write_between(
    job: Job,
    service: InterpolationService,
    io: JobIO,
    writer: VideoWriter,
    previous: _Previous,
    prepared: PreparedFrame,
    time_s: float,
    timesteps: list[float],
) -> None:
    params = job.params
    assert isinstance(params, InterpolationParams)
    results = await _retrying(
        lambda: service.interpolate(
            job.id, previous.prepared, prepared, timesteps, params.scene_change_threshold, Priority.BATCH
        )
    )
    for result in results:
        between = previous.time_s + result.timestep * (time_s - previous.time_s)
        await io.run(writer.write, result.frame, between)


# -------------------------------------------------------------------------- segmentation


async def run_segmentation(job: Job, service: SegmentationService) -> None:
    """Masks for every frame from the one given: a zip of index PNGs and COCO RLE, or an
    overlay video."""
    params = job.params
    assert isinstance(params, SegmentationParams)
    mask = decode_index_png(params.mask, (job.info.height, job.info.width))  # uint8 H×W ids
    video = service.fresh(XMemConfig())
    io = JobIO(job)
    sink: _MaskSink = _ZipSink(job, params.objects) if params.output == "zip" else _OverlaySink(job)
    await io.run(sink.open)
    try:
        async with aclosing(frames_of(job, io)) as frames:
            async for frame in frames:
                index_mask, video = await _segment(job, service, video, frame, mask, params)
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
    job: Job,
    service: SegmentationService,
    video: XMemState,
    frame: DecodedFrame,
    mask: np.ndarray,
    params: SegmentationParams,
) -> tuple[np.ndarray, XMemState]:
    """frame → uint8 H×W ids and the video after it; frames before the mask's frame have
    no objects yet."""
    is_before_mask = frame.index < params.mask_frame
    if is_before_mask:
        return np.zeros(frame.rgb.shape[:2], np.uint8), video
    given = mask if frame.index == params.mask_frame else None
    result: Segmented = await _retrying(
        lambda: service.step(job.id, video, frame.rgb, given, None, params.processing_size, Priority.BATCH)
    )
    return result.index_mask, result.state


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
            audio_from=_audio_of(job),
        )

    def open(self) -> None:
        self.writer.__enter__()

    def add(self, frame: DecodedFrame, index_mask: np.ndarray) -> None:
        self.writer.write(overlay(frame.rgb, index_mask), frame.time_s)

    def finish(self) -> None:
        self.writer.__exit__(None, None, None)

    def abort(self) -> None:
        self.writer.__exit__(RuntimeError, RuntimeError("job stopped"), None)
