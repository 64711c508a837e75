"""The blocking client: the async client run on a private event loop in a background thread,
so both share every line of protocol logic."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from clients.python.aio import (
    AsyncClient,
    AsyncEmbedSession,
    AsyncEmbedStream,
    AsyncInterpolationSession,
    AsyncInterpolationStream,
    AsyncSegmentationSession,
    AsyncSegmentationStream,
    AsyncSession,
    api_key_from,
)
from clients.python.frames import FrameLike
from clients.python.protocol import (
    ClipEmbedding,
    EmbedFrameResult,
    FrameResult,
    Interpolated,
    Job,
    SegmentResult,
)

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread; ``run`` blocks on one coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vidserve-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Client:
    """Blocking twin of AsyncClient: the same methods, same options, same errors."""

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
        api_key_from(api_key)  # why here: a bad key fails before a thread is started
        self._loop = _Loop()

        async def build() -> AsyncClient:  # why: httpx binds its pool to the loop that uses it
            return AsyncClient(
                base_url,
                api_key=api_key,
                timeout=timeout,
                max_retries=max_retries,
                backoff=backoff,
                retry_budget_s=retry_budget_s,
            )

        self.aio = self._loop.run(build())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self.aio.aclose())
        self._loop.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the async client's coroutines on this client's loop."""
        return self._loop.run(coro)

    def health(self) -> dict[str, Any]:
        return self.run(self.aio.health())

    def ready(self) -> dict[str, Any]:
        return self.run(self.aio.ready())

    def interpolate(
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
        return self.run(
            self.aio.interpolate(
                frame0,
                frame1,
                timesteps=timesteps,
                factor=factor,
                scale=scale,
                model=model,
                output_format=output_format,
                scene_change_threshold=scene_change_threshold,
            )
        )

    def embed_clip(
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
        return self.run(
            self.aio.embed_clip(
                video,
                frames,
                model=model,
                frames_per_clip=frames_per_clip,
                sampling_rate=sampling_rate,
                stride=stride,
                keep_ratio=keep_ratio,
                drop=drop,
                top_k=top_k,
            )
        )

    def create_interpolation_session(self, **options: Any) -> InterpolationSession:
        """Options as AsyncClient.create_interpolation_session."""
        return InterpolationSession(self, self.run(self.aio.create_interpolation_session(**options)))

    def create_segmentation_session(self, **options: Any) -> SegmentationSession:
        """Options as AsyncClient.create_segmentation_session."""
        return SegmentationSession(self, self.run(self.aio.create_segmentation_session(**options)))

    def create_embed_session(self, **options: Any) -> EmbedSession:
        """Options as AsyncClient.create_embed_session."""
        return EmbedSession(self, self.run(self.aio.create_embed_session(**options)))

    def session(self, session_id: str) -> Session:
        return Session(self, self.aio.session(session_id))

    # --- clip jobs: as AsyncClient's ---------------------------------------------------------

    def submit_job(
        self, video: str | Path | bytes, task: str, *, mask: np.ndarray | bytes | None = None, **params: Any
    ) -> Job:
        return self.run(self.aio.submit_job(video, task, mask=mask, **params))

    def job(self, job_id: str) -> Job:
        return self.run(self.aio.job(job_id))

    def jobs(self) -> list[Job]:
        return self.run(self.aio.jobs())

    def wait_job(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        return self.run(self.aio.wait_job(job_id, poll_s=poll_s, timeout=timeout, on_progress=on_progress))

    def download_job(self, job_id: str, path: str | Path) -> Path:
        return self.run(self.aio.download_job(job_id, path))

    def job_result_json(self, job_id: str) -> dict[str, Any]:
        return self.run(self.aio.job_result_json(job_id))

    def embed_job_result(self, job_id: str) -> ClipEmbedding:
        return self.run(self.aio.embed_job_result(job_id))

    def cancel_job(self, job_id: str) -> Job:
        return self.run(self.aio.cancel_job(job_id))


class Session:
    def __init__(self, client: Client, aio: AsyncSession) -> None:
        self.client = client
        self.aio = aio

    @property
    def id(self) -> str:
        return self.aio.id

    @property
    def data(self) -> dict[str, Any]:
        return self.aio.data

    def info(self) -> dict[str, Any]:
        return self.client.run(self.aio.info())

    def delete(self) -> dict[str, Any]:
        return self.client.run(self.aio.delete())


class InterpolationSession(Session):
    aio: AsyncInterpolationSession

    def stream(self) -> InterpolationStream:
        return InterpolationStream(self.client, self.aio.stream())


class SegmentationSession(Session):
    aio: AsyncSegmentationSession

    def stream(self, *, resume: bool = False, replay_frames: int = 256) -> SegmentationStream:
        """As AsyncSegmentationSession.stream."""
        return SegmentationStream(self.client, self.aio.stream(resume=resume, replay_frames=replay_frames))


class EmbedSession(Session):
    aio: AsyncEmbedSession

    def stream(self) -> EmbedStream:
        return EmbedStream(self.client, self.aio.stream())


class _SyncStream:
    def __init__(
        self, client: Client, aio: AsyncInterpolationStream | AsyncSegmentationStream | AsyncEmbedStream
    ) -> None:
        self.client = client
        self._aio = aio

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        self.client.run(self._aio.connect())

    def close(self) -> None:
        self.client.run(self._aio.close())

    @property
    def info(self) -> dict[str, Any]:
        """The stream's first message: the session object."""
        return self._aio.info


class InterpolationStream(_SyncStream):
    def __init__(self, client: Client, aio: AsyncInterpolationStream) -> None:
        super().__init__(client, aio)
        self.aio = aio

    def send(
        self,
        frame: FrameLike,
        *,
        frame_index: int | None = None,
        pts: float | None = None,
        timesteps: list[float] | None = None,
    ) -> FrameResult:
        """``timesteps``: this pair's own instead of the session's ([] for none)."""
        return self.client.run(self.aio.send(frame, frame_index=frame_index, pts=pts, timesteps=timesteps))

    def stream(self, frames: Iterable[FrameLike]) -> Iterator[FrameResult]:
        for frame in frames:
            yield self.send(frame)


class EmbedStream(_SyncStream):
    def __init__(self, client: Client, aio: AsyncEmbedStream) -> None:
        super().__init__(client, aio)
        self.aio = aio

    def send(
        self, frame: FrameLike, *, frame_index: int | None = None, pts: float | None = None
    ) -> EmbedFrameResult:
        return self.client.run(self.aio.send(frame, frame_index=frame_index, pts=pts))

    def stream(self, frames: Iterable[FrameLike]) -> Iterator[EmbedFrameResult]:
        for frame in frames:
            yield self.send(frame)


class SegmentationStream(_SyncStream):
    def __init__(self, client: Client, aio: AsyncSegmentationStream) -> None:
        super().__init__(client, aio)
        self.aio = aio

    @property
    def session_id(self) -> str:
        """The current session's id (a resumed stream's changes)."""
        return self.aio.session.id

    @property
    def resumed(self) -> int:
        """Times the session was re-created and re-primed (the server had forgotten it)."""
        return self.aio.resumed

    @property
    def replayed(self) -> int:
        """Frames sent again after a replica resumed the session from a checkpoint."""
        return self.aio.replayed

    def send(
        self,
        frame: FrameLike,
        *,
        mask: np.ndarray | dict[str, Any] | None = None,
        objects: list[int] | None = None,
        frame_index: int | None = None,
        pts: float | None = None,
    ) -> SegmentResult:
        return self.client.run(
            self.aio.send(frame, mask=mask, objects=objects, frame_index=frame_index, pts=pts)
        )

    def give_mask(self, mask: np.ndarray | dict[str, Any], objects: list[int] | None = None) -> None:
        self.client.run(self.aio.give_mask(mask, objects))

    def remove_object(self, object_id: int) -> None:
        self.client.run(self.aio.remove_object(object_id))

    def reset(self) -> None:
        self.client.run(self.aio.reset())

    def stream(
        self, frames: Iterable[FrameLike], *, first_mask: np.ndarray | None = None
    ) -> Iterator[SegmentResult]:
        for index, frame in enumerate(frames):
            yield self.send(frame, mask=first_mask if index == 0 else None)
