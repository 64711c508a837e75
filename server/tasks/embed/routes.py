"""``POST /v1/clips``: a clip in (a video file, or its frames in order), its windows'
embeddings and labels out, for editors. The clip runs as a stream of its own through the
task's one step (``step.py``)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from models.video import DecodedFrame, VideoError, probe, read_frames
from models.videomae.inference import ClipInputError, Drop, Window
from server.api.deps import State, read_upload
from server.api.errors import ApiError
from server.media import check_frame_size, decode_image
from server.sessions.store import new_core
from server.state import ServerState
from server.tasks.embed.service import EmbedService
from server.tasks.embed.session import MAX_STRIDE, TASK, EmbedSession, WindowFields
from server.tasks.embed.step import new_stream, step
from server.tasks.embed.wire import ClipView, clip_answer, too_short

router = APIRouter(prefix="/v1", tags=["clip encoder"])
CLIPS_PATH = "/v1/clips"  # its body is a whole video, bounded as a job's upload


@router.post(
    "/clips",
    summary="Embed and classify a clip",
    response_model=ClipView,
    description="One segment per window of the clip (its embedding, top Kinetics-400 labels and "
    "the tokens that ran), and the mean embedding over the segments. Send the clip as a `video` "
    "file, or as repeated `frames` images in order. Videos longer than VIDSERVE_MAX_CLIP_FRAMES "
    "go to `/v1/jobs` with `task=embed`. Errors: 413 `too_many_frames` over that bound; 422 "
    "`clip_too_short` (fewer frames than one window spans), `size_mismatch` (frames of mixed "
    "sizes), `invalid_video`, `invalid_argument` (a `stride` off the tubelets, an odd "
    "`frames_per_clip`, video and frames together or neither); 400 `invalid_image`.",
)
async def embed_clip(
    state: State,
    video: Annotated[UploadFile | None, File(description="the clip: a video file")] = None,
    frames: Annotated[list[UploadFile] | None, File(description="or its frames, in order")] = None,
    model: Annotated[str | None, Form(description="served VideoMAE model (default: the first)")] = None,
    frames_per_clip: Annotated[int, Form(ge=2, le=64, description="sampled frames per window")] = 16,
    sampling_rate: Annotated[int, Form(ge=1, le=64, description="every Nth frame is sampled")] = 4,
    stride: Annotated[
        int | None, Form(ge=1, le=MAX_STRIDE, description="frames between window starts")
    ] = None,
    keep_ratio: Annotated[float, Form(gt=0, le=1, description="share of tokens that run")] = 1.0,
    drop: Annotated[Drop, Form(description="tube or static")] = "tube",
    top_k: Annotated[int, Form(ge=1, le=400, description="labels per window")] = 5,
) -> dict[str, Any]:
    service = state.service(model, state.task_named(TASK))
    assert isinstance(service, EmbedService)
    fields = WindowFields(
        frames_per_clip=frames_per_clip,
        sampling_rate=sampling_rate,
        stride=stride,
        keep_ratio=keep_ratio,
        drop=drop,
        top_k=top_k,
    )
    clip = new_stream(service, fields, new_core("req-"))
    if (video is None) == (not frames):
        raise ApiError(422, "invalid_argument", "send the clip as a video file or as frames, one of the two")
    with state.announce(service.model, clip.id):
        if video is not None:
            count, windows = await _run(service, clip, _video_frames(state, video, clip))
        else:
            count, windows = await _run(service, clip, _image_frames(state, frames or [], clip))
    if not windows:
        raise ClipInputError("clip_too_short", too_short(clip.spec, count))
    return clip_answer(service.model, clip.spec, count, windows, clip.top_k)


async def _run(
    service: EmbedService, clip: EmbedSession, frames: AsyncIterator[tuple[Any, float | None]]
) -> tuple[int, list[Window]]:
    """Every frame through the step, in order → how many there were, and the windows."""
    windows: list[Window] = []
    count = 0
    async for pixels, pts in frames:
        window = await step(service, clip, pixels, count, pts)
        count += 1
        if window is not None:
            windows.append(window)
    return count, windows


async def _image_frames(
    state: ServerState, uploads: list[UploadFile], clip: EmbedSession
) -> AsyncIterator[tuple[Any, float | None]]:
    limit = state.settings.max_clip_frames
    if len(uploads) > limit:
        raise ApiError(
            413, "too_many_frames", f"{len(uploads)} frames are more than {limit} (VIDSERVE_MAX_CLIP_FRAMES)"
        )
    if len(uploads) < clip.spec.span:
        raise ClipInputError("clip_too_short", too_short(clip.spec, len(uploads)))
    for number, upload in enumerate(uploads):
        data = await read_upload(state, upload, f"frame {number}")
        yield await asyncio.to_thread(decode_image, data, state.settings.max_pixels), None


async def _video_frames(
    state: ServerState, upload: UploadFile, clip: EmbedSession
) -> AsyncIterator[tuple[Any, float | None]]:
    """The video's frames, decoded one at a time in one worker thread (the decoder is never
    entered by two threads), with their times in seconds."""
    limit = state.settings.max_clip_frames
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="vidserve-clip-") as folder, ThreadPoolExecutor(1) as thread:
        path = Path(folder) / f"clip{Path(upload.filename or '').suffix.lower()[:8] or '.bin'}"
        await loop.run_in_executor(thread, _copy, upload, path)
        info = await loop.run_in_executor(thread, _probe, path)
        check_frame_size(info.width, info.height, state.settings.max_pixels)
        if info.frames is not None and info.frames < clip.spec.span:
            raise ClipInputError("clip_too_short", too_short(clip.spec, info.frames))
        decoded: Iterator[DecodedFrame] = read_frames(path)
        try:
            while (frame := await loop.run_in_executor(thread, _next, decoded, path)) is not None:
                if frame.index >= limit:
                    raise ApiError(
                        413, "too_many_frames", f"the video has more than {limit} frames "
                        "(VIDSERVE_MAX_CLIP_FRAMES); send it to /v1/jobs with task=embed",
                    )  # fmt: skip
                yield frame.rgb, frame.time_s
        finally:
            await loop.run_in_executor(thread, _close, decoded)


def _probe(path: Path) -> Any:
    try:
        return probe(path)
    except VideoError as exc:
        raise ApiError(422, "invalid_video", _without_path(exc, path)) from exc


def _next(frames: Iterator[DecodedFrame], path: Path) -> DecodedFrame | None:
    try:
        return next(frames, None)
    except VideoError as exc:
        raise ApiError(422, "invalid_video", _without_path(exc, path)) from exc


def _close(frames: Iterator[DecodedFrame]) -> None:
    close = getattr(frames, "close", None)
    if close is not None:
        close()


def _without_path(exc: Exception, path: Path) -> str:
    """The message without the server's temporary path."""
    return str(exc).replace(str(path), "the video")


def _copy(upload: UploadFile, path: Path) -> None:
    """The spooled upload as a file the decoder can seek in."""
    upload.file.seek(0)
    with path.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            out.write(chunk)
