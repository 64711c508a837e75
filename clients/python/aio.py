"""The asyncio client: REST over httpx, streams over websockets (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from clients.python import protocol
from clients.python.errors import (
    CLOSE_TRY_AGAIN_LATER,
    FrameRejected,
    Gone,
    JobFailed,
    NotFound,
    NotReady,
    Overloaded,
    StreamClosed,
    VidserveError,
    error_from_body,
    refused_access,
    stream_closed,
)
from clients.python.frames import FrameLike, encode_frame, encode_index_png, mask_ids
from clients.python.protocol import (
    ClipEmbedding,
    ClipSegment,
    EmbedFrameResult,
    FrameResult,
    Interpolated,
    Job,
    SegmentResult,
)

T = TypeVar("T")
RETRIED_STATUS = (429, 503)  # why: the protocol answers both with Retry-After: they pass
API_KEY_ENV = "VIDSERVE_API_KEY"  # the key a client sends when none is given


def api_key_from(given: str | None) -> str | None:
    """The key to send: ``given``, else ``$VIDSERVE_API_KEY``; "" sends none. Whitespace
    around it (a key read from a file) is dropped; one a header cannot carry is refused
    without being repeated."""
    key = (os.environ.get(API_KEY_ENV, "") if given is None else given).strip()
    if any(not "!" <= c <= "~" for c in key):
        raise ValueError("the API key holds spaces or characters an HTTP header cannot carry")
    return key or None


class AsyncClient:
    """A vidserve server at ``base_url``. REST 429/503 are retried ``max_retries`` times,
    waiting Retry-After or ``backoff``·2^attempt seconds, as long as one call's waits stay
    within ``retry_budget_s`` (a Retry-After past it raises at once, QuotaExceeded for a
    key's quota); a stream closed with 1013 is retried with the backoff. ``api_key`` (default
    ``$VIDSERVE_API_KEY``) goes as ``Authorization: Bearer`` on every request and stream."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        retry_budget_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.retry_budget_s = retry_budget_s
        key = api_key_from(api_key)
        # why a header, on streams too: never in a URL, where access logs would keep it
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=self._auth)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        seconds = _retry_after_s(retry_after)
        return float(self.backoff * 2**attempt) if seconds is None else seconds

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One REST call, retried on 429/503 within the retry budget; raises the typed error
        for any other 4xx/5xx, and for a 429/503 whose wait would go past the budget."""
        attempt, waited = 0, 0.0
        while True:
            response = await self._http.request(method, path, **kwargs)
            if response.status_code < 400:
                return response
            retry_after = response.headers.get("retry-after")
            wait = self.delay(attempt, retry_after)
            is_retried = response.status_code in RETRIED_STATUS and attempt < self.max_retries
            within_budget = waited + wait <= self.retry_budget_s
            if is_retried and within_budget:
                await asyncio.sleep(wait)
                attempt, waited = attempt + 1, waited + wait
                continue
            raise error_from_body(
                response.status_code,
                _json_or_none(response),
                response.text,
                retry_after_s=_retry_after_s(retry_after),
                budget_s=self.retry_budget_s if is_retried and not within_budget else None,
            )

    # --- operations ---------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: the process is alive."""
        body: dict[str, Any] = (await self.request("GET", "/healthz")).json()
        return body

    async def ready(self) -> dict[str, Any]:
        """``GET /readyz`` once, without retries: its body when ready, else NotReady."""
        response = await self._http.get("/readyz")
        body: dict[str, Any] = response.json()
        if response.status_code == 503:
            raise NotReady("not_ready", str(body.get("error") or "engines are loading"), 503)
        if response.status_code >= 400:
            raise error_from_body(response.status_code, body, response.text)
        return body

    # --- one pair ------------------------------------------------------------------------

    async def interpolate(
        self,
        frame0: FrameLike,
        frame1: FrameLike,
        *,
        timesteps: list[float] | None = None,
        factor: int | None = None,
        scale: float = 1.0,
        model: str | None = None,
        output_format: str = "png",
        scene_change_threshold: float | str | None = "default",
    ) -> list[Interpolated]:
        """``POST /v1/interpolate``: the in-between frames (uint8 H×W×3) in timestep order.
        ``scene_change_threshold``: a number, None (never a cut) or "default" (the server's)."""
        files = {
            "frame0": ("frame0", encode_frame(frame0), "application/octet-stream"),
            "frame1": ("frame1", encode_frame(frame1), "application/octet-stream"),
        }
        form = protocol.interpolate_form(
            timesteps, factor, scale, model, output_format, scene_change_threshold
        )
        response = await self.request("POST", "/v1/interpolate", files=files, data=form)
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("multipart/"):
            return await asyncio.to_thread(protocol.parse_interpolated, content_type, response.content)
        headers = dict(response.headers.items())
        return [await asyncio.to_thread(protocol.parse_single, headers, response.content)]

    # --- one clip ------------------------------------------------------------------------

    async def embed_clip(
        self,
        video: str | Path | bytes | None = None,
        frames: Iterable[FrameLike] | None = None,
        *,
        model: str | None = None,
        frames_per_clip: int = 16,
        sampling_rate: int = 4,
        stride: int | None = None,
        keep_ratio: float = 1.0,
        drop: str = "tube",
        top_k: int = 5,
    ) -> ClipEmbedding:
        """``POST /v1/clips``: a clip as a video (a path or its bytes) or as its frames in
        order (uint8 H×W×3 arrays, PIL images or encoded images) → one segment per window
        and their mean embedding. A window spans (frames_per_clip − 1)·sampling_rate + 1
        frames and starts every ``stride`` frames (default frames_per_clip·sampling_rate);
        a clip shorter than one window raises InvalidRequest ``clip_too_short``."""
        if (video is None) == (frames is None):
            raise ValueError("embed_clip: give the clip as video or as frames, one of the two")
        if video is not None:
            files = [("video", await _video_file(video))]
        else:
            files = await asyncio.to_thread(_frame_files, frames or [])
        fields = protocol.embed_fields(model, frames_per_clip, sampling_rate, stride, keep_ratio, drop, top_k)
        response = await self.request("POST", "/v1/clips", files=files, data=protocol.form_fields(fields))
        return protocol.parse_clip(response.json())

    # --- clip jobs -------------------------------------------------------------------------

    async def submit_job(
        self,
        video: str | Path | bytes,
        task: str,
        *,
        mask: np.ndarray | bytes | None = None,
        **params: Any,
    ) -> Job:
        """``POST /v1/jobs``: a whole clip (a path or its bytes) for ``task`` ("interpolate",
        "segment" or "embed"). ``mask``: the first frame's ids (uint8 H×W) or an index PNG.
        ``params``: model; factor, scale, scene_change_threshold; mask_frame,
        processing_size, output ("zip" or "video"); frames_per_clip, sampling_rate, stride,
        keep_ratio, drop, top_k."""
        files: dict[str, Any] = {"video": await _video_file(video)}
        if mask is not None:
            png = mask if isinstance(mask, bytes) else encode_index_png(mask)
            files["mask"] = ("mask.png", png, "image/png")
        response = await self.request("POST", "/v1/jobs", files=files, data=protocol.job_form(task, params))
        return protocol.parse_job(response.json())

    async def job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``: state and progress."""
        return protocol.parse_job((await self.request("GET", f"/v1/jobs/{job_id}")).json())

    async def jobs(self) -> list[Job]:
        """``GET /v1/jobs``: every job the server holds."""
        body = (await self.request("GET", "/v1/jobs")).json()
        return [protocol.parse_job(j) for j in body["jobs"]]

    async def wait_job(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job is done (and return it); raise JobFailed when it failed or was
        cancelled, TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state == "done":
                return job
            if job.is_finished:
                raise JobFailed(job)
            if deadline is not None and asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            await asyncio.sleep(poll_s)

    async def download_job(self, job_id: str, path: str | Path) -> Path:
        """``GET /v1/jobs/{id}/result`` into ``path``, streamed; the file appears whole or not
        at all."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        try:
            async with self._http.stream("GET", f"/v1/jobs/{job_id}/result") as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_body(response.status_code, _json_or_none(response), response.text)
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    async def job_result_json(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/result`` of a job whose result is JSON (an embed job's)."""
        response = await self.request("GET", f"/v1/jobs/{job_id}/result")
        if not response.headers.get("content-type", "").startswith("application/json"):
            kind = response.headers.get("content-type", "no type")
            raise ValueError(f"job {job_id}'s result is {kind}, not JSON: use download_job")
        body: dict[str, Any] = response.json()
        return body

    async def embed_job_result(self, job_id: str) -> ClipEmbedding:
        """A finished embed job's result: the answer ``POST /v1/clips`` gives."""
        return protocol.parse_clip(await self.job_result_json(job_id))

    async def cancel_job(self, job_id: str) -> Job:
        """``DELETE /v1/jobs/{id}``: cancel a job, or forget a finished one and its result."""
        return protocol.parse_job((await self.request("DELETE", f"/v1/jobs/{job_id}")).json())

    # --- sessions --------------------------------------------------------------------------

    async def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/sessions`` with a raw body: the created session object."""
        created: dict[str, Any] = (await self.request("POST", "/v1/sessions", json=body)).json()
        return created

    async def create_interpolation_session(
        self,
        *,
        factor: int | None = None,
        timesteps: list[float] | None = None,
        model: str | None = None,
        scale: float = 1.0,
        scene_change_threshold: float | None = 0.2,
        output_format: str = "png",
    ) -> AsyncInterpolationSession:
        body = protocol.interpolation_body(
            factor, timesteps, model, scale, scene_change_threshold, output_format
        )
        return AsyncInterpolationSession(self, body, await self.create_session(body))

    async def create_segmentation_session(
        self,
        *,
        model: str | None = None,
        processing_size: int | None = 480,
        max_objects: int = 4,
        output_format: str = "png",
        probabilities: bool = False,
        mem_every: int | None = None,
        top_k: int | None = None,
        min_mid_term_frames: int | None = None,
        max_mid_term_frames: int | None = None,
        num_prototypes: int | None = None,
        max_long_term_elements: int | None = None,
    ) -> AsyncSegmentationSession:
        """A segmentation session (§10); memory settings left None take the paper's values."""
        memory = {
            "mem_every": mem_every,
            "top_k": top_k,
            "min_mid_term_frames": min_mid_term_frames,
            "max_mid_term_frames": max_mid_term_frames,
            "num_prototypes": num_prototypes,
            "max_long_term_elements": max_long_term_elements,
        }
        body = protocol.segmentation_body(
            model, processing_size, max_objects, output_format, probabilities, memory
        )
        return AsyncSegmentationSession(self, body, await self.create_session(body))

    async def create_embed_session(
        self,
        *,
        model: str | None = None,
        frames_per_clip: int = 16,
        sampling_rate: int = 4,
        stride: int | None = None,
        keep_ratio: float = 1.0,
        drop: str = "tube",
        top_k: int = 5,
    ) -> AsyncEmbedSession:
        """A clip encoder session: windows cut as ``embed_clip``'s, over a live stream."""
        fields = protocol.embed_fields(model, frames_per_clip, sampling_rate, stride, keep_ratio, drop, top_k)
        body = {"task": "embed", **fields}
        return AsyncEmbedSession(self, body, await self.create_session(body))

    def session(self, session_id: str) -> AsyncSession:
        """A handle on an existing session, by id (for ``info``, ``delete``)."""
        return AsyncSession(self, {}, {"id": session_id})


class AsyncSession:
    """A session on the server: ``id``, ``body`` (the settings it was created with), ``data``
    (the creation answer)."""

    def __init__(self, client: AsyncClient, body: dict[str, Any], data: dict[str, Any]) -> None:
        self.client = client
        self.body = body
        self.data = data
        self.id: str = data["id"]

    @property
    def stream_url(self) -> str:
        given = self.data.get("stream_url")
        if isinstance(given, str):
            return given
        return self.client.base_url.replace("http", "ws", 1) + f"/v1/sessions/{self.id}/stream"

    async def info(self) -> dict[str, Any]:
        """``GET /v1/sessions/{id}``."""
        body: dict[str, Any] = (await self.client.request("GET", f"/v1/sessions/{self.id}")).json()
        return body

    async def delete(self) -> dict[str, Any]:
        """``DELETE /v1/sessions/{id}``: the session object with ``state: "closed"``."""
        body: dict[str, Any] = (await self.client.request("DELETE", f"/v1/sessions/{self.id}")).json()
        return body

    async def recreate(self) -> None:
        """A new session with the same settings, in place of this one (after 404/410)."""
        self.data = await self.client.create_session(self.body)
        self.id = self.data["id"]


class AsyncInterpolationSession(AsyncSession):
    def stream(self) -> AsyncInterpolationStream:
        """The session's websocket: ``async with session.stream() as stream: ...``."""
        return AsyncInterpolationStream(self)


class AsyncSegmentationSession(AsyncSession):
    def stream(self, *, resume: bool = False, replay_frames: int = 256) -> AsyncSegmentationStream:
        """The session's websocket; ``resume``: when the connection drops or the server restarts
        (1012), reconnect, and where a replica resumed the session from a checkpoint
        (``resumed_from_frame``), send again the frames answered since (up to
        ``replay_frames`` of them); where the server forgot it (404/410, 4404/4410), re-create
        and re-prime it with the last frame and its mask."""
        return AsyncSegmentationStream(self, resume=resume, replay_frames=replay_frames)


class AsyncEmbedSession(AsyncSession):
    def stream(self) -> AsyncEmbedStream:
        """The session's websocket: ``async with session.stream() as stream: ...``."""
        return AsyncEmbedStream(self)


class _Stream:
    """One websocket on a session: connect, read the ``session`` message, close."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.client = session.client
        self.info: dict[str, Any] = {}  # the first server message: the session object
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the websocket; a refused session raises StreamClosed (StreamNotFound 4404,
        StreamGone 4410, 4409 another stream attached, StreamUnauthorized 4401)."""
        await self.close()
        ws = await connect(
            self.session.stream_url,
            additional_headers=self.client._auth,
            max_size=None,
            open_timeout=self.client.timeout,
        )
        try:
            self.info = protocol.parse_text(await self._recv(ws))
        except BaseException:
            await ws.close()
            raise
        self._ws = ws

    async def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("the stream is not connected: use `async with session.stream()`")
        return self._ws

    async def _recv(self, ws: ClientConnection | None = None) -> str | bytes:
        """The next message; a close raises the typed StreamClosed."""
        ws = ws or self.ws
        try:
            return await asyncio.wait_for(ws.recv(), self.client.timeout)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def _send(self, *messages: str | bytes) -> None:
        try:
            for message in messages:
                await self.ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def _drain_close(self) -> None:
        """After ``overloaded`` the server closes with 1013: read up to the close."""
        try:
            while True:
                await self._recv()
        except StreamClosed:
            pass


class _ResendingStream(_Stream, Generic[T]):
    """A stream of plain frames (a header gives at most frame_index and pts), each answered
    up to its ``frame_done``: an ``overloaded`` frame is resent on a new connection."""

    async def send(self, frame: FrameLike, *, frame_index: int | None = None, pts: float | None = None) -> T:
        """Send one frame and wait for its answer. An error naming it raises FrameRejected; an
        ``overloaded`` frame is resent on a new connection with the same header (the server
        gave its index back: it was not run), at most ``max_retries`` times, then Overloaded."""
        return await self._send_frame(frame, protocol.frame_header(frame_index, pts))

    async def _send_frame(self, frame: FrameLike, header: str | None) -> T:
        data = encode_frame(frame)
        attempt = 0
        while True:
            try:
                await self._send(*_frame_messages(header, data))
                return await self._answer()
            except (FrameRejected, StreamClosed) as exc:
                if not _overloaded(exc) or attempt >= self.client.max_retries:
                    raise _as_overloaded(exc) if _overloaded(exc) else exc from None
            await self._drain_close()
            await asyncio.sleep(self.client.delay(attempt))
            attempt += 1
            await self.connect()

    async def _answer(self) -> T:
        """The server's messages about the frame just sent, up to its ``frame_done``."""
        raise NotImplementedError

    async def stream(self, frames: Iterable[FrameLike]) -> AsyncIterator[T]:
        """Each frame's answer, in order (a rejected frame raises FrameRejected)."""
        for frame in frames:
            yield await self.send(frame)


class AsyncInterpolationStream(_ResendingStream[FrameResult]):
    """Frames in; for each frame, the in-between frames of the pair it completes (none for
    the first) (§3–§6)."""

    async def send(
        self,
        frame: FrameLike,
        *,
        frame_index: int | None = None,
        pts: float | None = None,
        timesteps: list[float] | None = None,
    ) -> FrameResult:
        """As ``_ResendingStream.send``; ``timesteps``: this pair's own (increasing, in (0, 1);
        [] for none) instead of the session's (§5)."""
        return await self._send_frame(frame, protocol.frame_header(frame_index, pts, timesteps=timesteps))

    async def _answer(self) -> FrameResult:
        frames = []
        while True:
            message = protocol.parse_text(await self._recv())
            if message["type"] == "result":
                image = await self._recv()
                if not isinstance(image, bytes):
                    raise VidserveError("protocol_error", "a result header not followed by its image")
                frames.append(await asyncio.to_thread(protocol.streamed_frame, message, image))
            elif message["type"] == "frame_done":
                return protocol.frame_result(message, frames)
            elif message["type"] == "error":
                raise protocol.rejected(message)


class AsyncEmbedStream(_ResendingStream[EmbedFrameResult]):
    """Frames in; every ``stride`` frames, once a window is full, its embedding and labels
    (``segment``, None for most frames). Every frame has the first one's size (else
    FrameRejected ``size_mismatch``)."""

    async def _answer(self) -> EmbedFrameResult:
        segment: ClipSegment | None = None
        while True:
            message = protocol.parse_text(await self._recv())
            if message["type"] == "result":
                segment = protocol.clip_segment(message)
            elif message["type"] == "frame_done":
                return protocol.embed_frame_result(message, segment)
            elif message["type"] == "error":
                raise protocol.rejected(message)


# why 256: a checkpoint every memory frame (5 frames at XMem's default) loses at most 4
# frames; this covers checkpoints as sparse as every 50 memory frames
REPLAY_FRAMES = 256


@dataclass
class _Sent:
    """A frame answered (or a control acknowledged) on a resumable stream, to send again."""

    index: int | None = None  # the frame's frame_index; None for a control
    data: bytes | None = None  # the frame's encoded image
    mask: np.ndarray | dict[str, Any] | None = None  # the mask it brought
    objects: list[int] | None = None
    pts: float | None = None
    control: str | None = None  # a control message


class AsyncSegmentationStream(_Stream):
    """Frames in, one mask per frame out, and the controls of §10."""

    def __init__(
        self, session: AsyncSegmentationSession, *, resume: bool = False, replay_frames: int = REPLAY_FRAMES
    ) -> None:
        super().__init__(session)
        self.resume = resume
        self.last_frame: bytes | None = None  # the last frame answered with a result
        self.last_mask: np.ndarray | dict[str, Any] | None = None  # its mask (index array or RLE spec)
        self.resumed = 0  # times the session was re-created
        self.replayed = 0  # frames sent again after the server resumed the session from a checkpoint
        # with ``resume``: what was sent since, to send again from a checkpoint's frame on
        self._sent: deque[_Sent] = deque(maxlen=replay_frames)

    async def connect(self) -> None:
        try:
            await super().connect()
        except (NotFound, Gone):
            if not self.resume:
                raise
            await self._recreate()

    async def send(
        self,
        frame: FrameLike,
        *,
        mask: np.ndarray | dict[str, Any] | None = None,
        objects: list[int] | None = None,
        frame_index: int | None = None,
        pts: float | None = None,
    ) -> SegmentResult:
        """Segment one frame (with ``mask``: uint8 H×W ids, or a §10 mask dict, setting
        ``objects``); an error naming it raises FrameRejected."""
        data = encode_frame(frame)
        messages = _frame_messages(protocol.frame_header(frame_index, pts, mask, objects), data)
        result = await self._resumable(lambda: self._exchange(messages))
        self._remember(data, result)
        if self.resume:
            self._sent.append(_Sent(result.frame_index, data, mask, objects, pts))
        return result

    async def give_mask(self, mask: np.ndarray | dict[str, Any], objects: list[int] | None = None) -> None:
        """Give, add or correct objects' masks on the next frame."""
        await self._control(protocol.mask_control(mask, objects))

    async def remove_object(self, object_id: int) -> None:
        """Stop tracking ``object_id`` from the next frame on."""
        await self._control(protocol.remove_control(object_id))
        if isinstance(self.last_mask, np.ndarray):
            self.last_mask = np.where(self.last_mask == object_id, 0, self.last_mask).astype(np.uint8)
        elif isinstance(self.last_mask, dict):
            self.last_mask["objects"].pop(str(object_id), None)

    async def reset(self) -> None:
        """Forget all memory and objects: the next frame needs a mask."""
        await self._control(protocol.reset_control())
        self.last_frame, self.last_mask = None, None

    async def stream(
        self, frames: Iterable[FrameLike], *, first_mask: np.ndarray | None = None
    ) -> AsyncIterator[SegmentResult]:
        """Each frame's result in order; ``first_mask`` goes with the first frame."""
        for index, frame in enumerate(frames):
            yield await self.send(frame, mask=first_mask if index == 0 else None)

    async def _control(self, message: str) -> None:
        async def exchange() -> None:
            await self._send(message)
            while True:
                answer = protocol.parse_text(await self._recv())
                if answer["type"] == "ack":
                    return
                if answer["type"] == "error":
                    raise protocol.rejected(answer)

        await self._resumable(exchange)
        if self.resume:
            self._sent.append(_Sent(control=message))

    async def _exchange(self, messages: list[str | bytes]) -> SegmentResult:
        await self._send(*messages)
        message = protocol.parse_text(await self._recv())
        if message["type"] == "error":
            raise protocol.rejected(message)
        if message["type"] != "result":
            raise VidserveError("protocol_error", f"unexpected {message['type']!r} message")
        binaries = []
        for _ in message.get("bytes", []):
            data = await self._recv()
            if not isinstance(data, bytes):
                raise VidserveError("protocol_error", "a result not followed by its binaries")
            binaries.append(data)
        return await asyncio.to_thread(protocol.segment_result, message, binaries)

    async def _resumable(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried once per allowed attempt after an overload (1013) or, with
        ``resume``, after the server forgot the session or the connection dropped."""
        attempt = 0
        failure: Exception | None = None  # what the next attempt must recover from first
        while True:
            try:
                if failure is not None:
                    await self._recover(failure)
                result: T = await call()
                return result
            except (VidserveError, OSError, httpx.TransportError) as exc:
                if attempt >= self.client.max_retries or not self._recoverable(exc):
                    raise _as_overloaded(exc) if _overloaded(exc) else exc from None
                await asyncio.sleep(self.client.delay(attempt))
                attempt += 1
                failure = exc

    def _recoverable(self, exc: Exception) -> bool:
        if _overloaded(exc):
            return True
        if refused_access(exc):  # why: a new session would be refused the same way
            return False
        if isinstance(exc, FrameRejected):
            return self.resume and exc.code == "session_closed"
        if isinstance(exc, VidserveError) and not isinstance(exc, StreamClosed):
            # why: another replica holds the session until its lease is released or lapses;
            # a proxy answers 502/504 while it finds every replica it knows of down, which
            # lasts until a crashed replica's place is taken (nginx's fail_timeout)
            is_passing = exc.code == "session_active_elsewhere" or exc.status in (502, 504)
            return self.resume and is_passing
        # why not 4422: the stored state is another model's; no retry changes that
        is_final = isinstance(exc, StreamClosed) and exc.code in (1000, 4422)  # 1000: deleted by a client
        return self.resume and not is_final

    async def _recover(self, exc: Exception) -> None:
        if _overloaded(exc):
            await self._drain_close()
            await self.connect()
            return
        await self.close()
        try:
            await self.info_or_raise()
            await super().connect()
        except (NotFound, Gone):
            await self._recreate()
            return
        if self.info.get("resumed"):
            await self._replay(self.info.get("resumed_from_frame"))

    async def _replay(self, resumed_from: int | None) -> None:
        """The server restored the session from a checkpoint taken after frame
        ``resumed_from`` (None: before any frame): send what followed it again, frames and
        controls in their order, their answers already given. A checkpoint older than what
        is kept to resend re-creates and re-primes the session instead."""
        frames = [sent.index for sent in self._sent if sent.index is not None]
        start = 0
        if resumed_from is not None:
            kept = [
                i
                for i, sent in enumerate(self._sent)
                if sent.index is not None and sent.index <= resumed_from
            ]
            if not kept and frames and frames[0] != resumed_from + 1:
                await self._recreate()
                return
            start = kept[-1] + 1 if kept else 0
        elif len(frames) == self._sent.maxlen and frames and frames[0] != 0:
            await self._recreate()  # why: the first frames were not kept
            return
        for sent in list(self._sent)[start:]:
            await self._send_again(sent)

    async def _send_again(self, sent: _Sent) -> None:
        if sent.control is not None:
            await self._send(sent.control)
            while protocol.parse_text(await self._recv())["type"] not in ("ack", "error"):
                pass
            return
        assert sent.data is not None
        header = protocol.frame_header(sent.index, sent.pts, sent.mask, sent.objects)
        await self._exchange(_frame_messages(header, sent.data))
        self.replayed += 1

    async def info_or_raise(self) -> None:
        """Raises NotFound/Gone when the server no longer knows the session."""
        await self.session.info()

    async def _recreate(self) -> None:
        """A new session with the same settings, primed with the last frame and its mask."""
        await self.session.recreate()
        self.resumed += 1
        await super().connect()
        if self.last_frame is None or self.last_mask is None:
            return
        if isinstance(self.last_mask, np.ndarray):
            objects = mask_ids(self.last_mask)
            if not objects:
                return
            header = protocol.frame_header(mask=self.last_mask, objects=objects)
        else:
            header = protocol.frame_header(mask=self.last_mask)
        await self._exchange(_frame_messages(header, self.last_frame))

    def _remember(self, data: bytes, result: SegmentResult) -> None:
        if not self.resume:
            return
        self.last_frame = data
        if result.mask is not None:
            self.last_mask = result.mask
        elif result.rles is not None:
            self.last_mask = {"format": "rle", "objects": dict(result.rles)}


async def _video_file(video: str | Path | bytes) -> tuple[str, bytes, str]:
    """A video upload: its name and bytes (a path is read in a thread)."""
    if isinstance(video, bytes):
        return "clip", video, "application/octet-stream"
    path = Path(video)
    return path.name, await asyncio.to_thread(path.read_bytes), "application/octet-stream"


def _frame_files(frames: Iterable[FrameLike]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """A clip's frames as repeated ``frames`` uploads, in order (arrays encoded as PNG)."""
    return [
        ("frames", (f"frame{i:05d}", encode_frame(frame), "application/octet-stream"))
        for i, frame in enumerate(frames)
    ]


def _frame_messages(header: str | None, data: bytes) -> list[str | bytes]:
    return [data] if header is None else [header, data]


def _overloaded(exc: BaseException) -> bool:
    if isinstance(exc, FrameRejected):
        return exc.code == "overloaded"
    return isinstance(exc, StreamClosed) and exc.code == CLOSE_TRY_AGAIN_LATER


def _as_overloaded(exc: Exception) -> Overloaded:
    message = exc.message if isinstance(exc, VidserveError) else str(exc)
    return Overloaded("overloaded", message)


def _closed(exc: ConnectionClosed) -> StreamClosed:
    """The typed error for a websockets close (no close frame received: the connection dropped)."""
    received = exc.rcvd
    return stream_closed(received.code if received else None, received.reason if received else "")


def _retry_after_s(header: str | None) -> float | None:
    """Retry-After in seconds; None when absent or an HTTP date (our backoff applies)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
