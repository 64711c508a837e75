"""The Python client against real servers: RIFE v4.0 (TorchScript on CPU) and XMem with the
conformance recipe's hashed weights, both real uvicorn on free ports."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from clients import (
    AsyncClient,
    AsyncInterpolationSession,
    Client,
    FrameRejected,
    InterpolationStream,
    NotFound,
    Overloaded,
    Session,
    StreamClosed,
    StreamNotFound,
)
from clients.python.frames import decode_index, decode_rgb
from clients.python.frames import encode_index_png as client_png
from server.tasks.segmentation.masks import encode_index_png
from tests.conftest import REPO_ROOT
from tests.server.support import (
    RunningServer,
    eventually,
    free_port,
    panning_frames,
    png,
    running_server,
    server_settings,
)
from tests.server.test_drain import wait_ready
from tests.server.test_segmentation import session_body

SEQ = "seq_a"


@pytest.fixture(scope="module")
def rife_server(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """One open session at most, so a second POST /v1/sessions answers 429 until it closes."""
    with running_server(server_settings(rife_v40_weights, engine_repository, max_sessions=1)) as running:
        yield running


@pytest.fixture()
def client(rife_server: RunningServer) -> Iterator[Client]:
    with Client(rife_server.url, timeout=120, backoff=0.05) as client:
        yield client


def rest_parts(response: httpx.Response) -> list[np.ndarray]:
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    images = []
    for part in message.iter_parts():
        body = part.get_payload(decode=True)
        assert isinstance(body, bytes)
        images.append(decode_rgb(body))
    return images


def close_to(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal up to the rounding of a differently batched engine call."""
    return got.shape == want.shape and int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1


def test_health_and_ready(client: Client) -> None:
    assert client.health() == {"status": "ok"}
    assert client.ready()["ready"] is True


def test_interpolate_matches_the_rest_endpoint(client: Client, rife_server: RunningServer) -> None:
    frames = panning_frames(2, step=3)
    files = {"frame0": png(frames[0]), "frame1": png(frames[1])}
    response = httpx.post(f"{rife_server.url}/v1/interpolate", files=files, data={"factor": "4"}, timeout=120)
    assert response.status_code == 200, response.text
    want = rest_parts(response)

    got_sync = client.interpolate(frames[0], Image.fromarray(frames[1]), factor=4)

    async def run() -> list[Any]:
        async with AsyncClient(rife_server.url, timeout=120) as aio:
            return await aio.interpolate(png(frames[0]), frames[1], timesteps=[0.25, 0.5, 0.75])

    got_async = asyncio.run(run())
    for got in (got_sync, got_async):
        assert [r.timestep for r in got] == [0.25, 0.5, 0.75]
        assert not any(r.scene_change for r in got)
        for result, expected in zip(got, want, strict=True):
            assert result.frame.dtype == np.uint8 and close_to(result.frame, expected)
    one = client.interpolate(frames[0], frames[1], timesteps=[0.5])
    assert len(one) == 1 and one[0].timestep == 0.5 and close_to(one[0].frame, want[1])


def test_stream_returns_in_between_frames_in_order(client: Client) -> None:
    frames = panning_frames(3)
    session = client.create_interpolation_session(factor=2)
    try:
        with session.stream() as stream:
            assert stream.info["type"] == "session" and stream.info["id"] == session.id
            results = list(stream.stream(frames))
        assert [r.frame_index for r in results] == [0, 1, 2]
        assert [len(r.frames) for r in results] == [0, 1, 1]
        assert [r.frames[0].source for r in results[1:]] == [(0, 1), (1, 2)]
        for r in results[1:]:
            assert r.frames[0].timestep == 0.5 and r.frames[0].frame.shape == frames[0].shape
        assert session.info()["frames_done"] == 3
    finally:
        session.delete()


def test_async_stream_with_pts(rife_server: RunningServer) -> None:
    frames = panning_frames(2)

    async def run() -> list[Any]:
        async with AsyncClient(rife_server.url, timeout=120, backoff=0.05) as aio:
            session = await aio.create_interpolation_session(timesteps=[0.25, 0.75])
            try:
                async with session.stream() as stream:
                    return [
                        await stream.send(f, frame_index=10 * i, pts=float(i)) for i, f in enumerate(frames)
                    ]
            finally:
                await session.delete()

    first, second = asyncio.run(run())
    assert first.frame_index == 0 and second.frame_index == 10
    assert [(f.timestep, f.pts, f.source) for f in second.frames] == [
        (0.25, 0.25, (0, 10)),
        (0.75, 0.75, (0, 10)),
    ]


def test_typed_errors(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.session("no-such-session").info()
    assert missing.value.status == 404 and missing.value.code == "unknown_session"


def test_unknown_stream_and_bad_frame(client: Client) -> None:
    ghost = AsyncInterpolationSession(client.aio, {}, {"id": "no-such-session"})
    stream = InterpolationStream(client, ghost.stream())
    with pytest.raises(StreamNotFound) as refused:
        stream.connect()
    assert isinstance(refused.value, StreamClosed) and isinstance(refused.value, NotFound)
    assert refused.value.code == 4404 and "no-such-session" in refused.value.reason

    frames = panning_frames(3)
    session = client.create_interpolation_session(factor=2)
    try:
        with session.stream() as stream:
            stream.send(frames[0])
            with pytest.raises(FrameRejected) as bad:
                stream.send(b"junk")
            assert bad.value.code == "invalid_image" and bad.value.frame_index == 1
            after = stream.send(frames[1])  # the stream goes on; the pair skips the bad frame
            assert after.frame_index == 2 and after.frames[0].source == (0, 2)
    finally:
        session.delete()
    with pytest.raises(StreamClosed) as gone:
        session.stream().connect()
    assert gone.value.code == 4410


def test_too_many_sessions_is_retried_until_one_closes(rife_server: RunningServer) -> None:
    with (
        Client(rife_server.url, max_retries=0) as impatient,
        Client(rife_server.url, backoff=0.2, max_retries=30) as patient,
    ):
        first = impatient.create_interpolation_session()
        with pytest.raises(Overloaded) as refused:
            impatient.create_interpolation_session()
        assert refused.value.status == 429 and refused.value.code == "too_many_sessions"

        labels = {"task": "sessions", "outcome": "overloaded"}
        refusals = rife_server.metric("vidserve_requests_total", **labels)
        created: list[Session] = []
        waiting = threading.Thread(target=lambda: created.append(patient.create_interpolation_session()))
        waiting.start()  # 429 first, then it waits Retry-After and asks again
        deadline = time.monotonic() + 30
        while (
            rife_server.metric("vidserve_requests_total", task="sessions", outcome="overloaded") == refusals
        ):
            assert time.monotonic() < deadline, "the patient client was never refused"
            time.sleep(0.02)
        first.delete()
        waiting.join(timeout=60)
        assert not waiting.is_alive()
        assert created and created[0].info()["state"] == "open"
        created[0].delete()


def test_overloaded_stream_reconnects_and_resends(rife_v40_weights: Path, engine_repository: Path) -> None:
    """A one-row engine queue held for 1 s: one session's pair waits in it, so the other's is
    answered ``overloaded`` and closed with 1013; the client reconnects and resends it until
    it fits."""
    settings = server_settings(rife_v40_weights, engine_repository, max_queue_size=1, max_queue_delay_ms=1000)
    frames = panning_frames(2)

    async def run(running: RunningServer) -> list[Any]:
        async with AsyncClient(running.url, timeout=120, backoff=0.5, max_retries=5) as aio:
            first = await aio.create_interpolation_session(factor=2)
            second = await aio.create_interpolation_session(factor=2)
            async with first.stream() as a, second.stream() as b:
                await a.send(frames[0])
                await b.send(frames[0])
                held = asyncio.ensure_future(a.send(frames[1]))

                async def is_queued() -> bool:
                    pending = await asyncio.to_thread(
                        running.metric, "vidserve_pending_request_count", model="rife-4.0"
                    )
                    return pending >= 1

                await eventually(is_queued, "the first pair waiting in the queue")
                resent = await b.send(frames[1])
                return [await held, resent]

    with running_server(settings) as running:
        results = asyncio.run(run(running))
        overloaded = running.metric("vidserve_frames_total", task="interpolate", outcome="overloaded")
    assert overloaded >= 1, "no frame was overloaded: the test did not exercise the resend"
    for result in results:
        assert len(result.frames) == 1 and result.frames[0].frame.shape == frames[0].shape
    # the overloaded frame gave its index back (it was not run), so its resend is frame 1 too
    assert sorted(r.frame_index for r in results) == [1, 1]


# --- segmentation -------------------------------------------------------------------------


def segmentation_options(xmem_spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = session_body(xmem_spec, **extra)
    del body["task"]
    return body


def first_mask(xmem_vectors: Any, ids: list[int]) -> np.ndarray:
    mask = xmem_vectors[f"{SEQ}/masks_u8"][0]
    return np.where(np.isin(mask, ids), mask, 0).astype(np.uint8)


def test_segmentation_stream(
    xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    frames = xmem_vectors[f"{SEQ}/frames_u8"]
    height, width = frames.shape[1:3]
    with Client(xmem_server.url, timeout=120) as client:
        session = client.create_segmentation_session(**segmentation_options(xmem_spec, probabilities=True))
        try:
            with session.stream() as stream:
                with pytest.raises(FrameRejected) as early:
                    stream.send(frames[0])  # no mask yet
                assert early.value.code == "invalid_argument" and early.value.frame_index == 0

                results = list(stream.stream(frames[1:4], first_mask=first_mask(xmem_vectors, [1, 2])))
                for result in results:
                    assert result.mask is not None and result.mask.shape == (height, width)
                    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1, 2}
                    assert result.tracked == [1, 2] and set(result.objects) <= {1, 2}
                    assert result.probabilities is not None and sorted(result.probabilities) == [1, 2]
                    assert result.probabilities[1].shape == (height, width)
                assert [r.frame_index for r in results] == [1, 2, 3]
                assert results[0].objects == [1, 2]

                stream.remove_object(2)
                assert stream.send(frames[4]).tracked == [1]
                with pytest.raises(FrameRejected) as unknown:
                    stream.remove_object(9)
                assert unknown.value.code == "invalid_argument" and unknown.value.frame_index is None

                stream.give_mask(first_mask(xmem_vectors, [2]), objects=[2])
                assert stream.send(frames[5]).tracked == [1, 2]
                stream.reset()
                with pytest.raises(FrameRejected):
                    stream.send(frames[6])  # no objects after a reset
        finally:
            session.delete()


def test_segmentation_rle_and_index_png(
    xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    """Our palette PNG is the server's index PNG; RLE sessions leave RLEs as dicts."""
    mask = first_mask(xmem_vectors, [1, 2])

    assert np.array_equal(decode_index(client_png(mask)), decode_index(encode_index_png(mask)))
    frames = xmem_vectors[f"{SEQ}/frames_u8"]

    async def run() -> Any:
        async with AsyncClient(xmem_server.url, timeout=120) as aio:
            session = await aio.create_segmentation_session(
                **segmentation_options(xmem_spec, output_format="rle")
            )
            try:
                async with session.stream() as stream:
                    return await stream.send(frames[0], mask=mask)
            finally:
                await session.delete()

    result = asyncio.run(run())
    assert result.mask is None and result.rles is not None and sorted(result.rles) == ["1", "2"]
    assert result.rles["1"]["size"] == [frames.shape[1], frames.shape[2]]


# --- resume across a server restart ------------------------------------------------------


def start_xmem_server(checkpoint: Path, repository: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "VIDSERVE_PORT": str(port),
        "VIDSERVE_MODELS": json.dumps(["xmem"]),
        "VIDSERVE_WEIGHTS": json.dumps({"xmem": str(checkpoint)}),
        "VIDSERVE_MODEL_REPOSITORY": str(repository),
        "VIDSERVE_ENGINE": "torchscript",
        "VIDSERVE_MAX_QUEUE_DELAY_MS": "2",
        "VIDSERVE_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "server"], cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_segmentation_resumes_after_a_server_restart(
    hashed_checkpoint: Path,
    engine_repository: Path,
    xmem_server: RunningServer,
    xmem_vectors: Any,
    xmem_spec: dict[str, Any],
) -> None:
    """The server restarts mid-stream and forgets the session: with ``resume=True`` the client
    creates a new one with the same settings, primes it with the last frame and its mask, and
    the next frame is answered with the same objects tracked."""
    frames = xmem_vectors[f"{SEQ}/frames_u8"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_xmem_server(hashed_checkpoint, engine_repository, port)
    try:
        wait_ready(url, process)
        with Client(url, timeout=120, backoff=0.05) as client:
            session = client.create_segmentation_session(**segmentation_options(xmem_spec))
            with session.stream(resume=True) as stream:
                before = list(stream.stream(frames[:3], first_mask=first_mask(xmem_vectors, [1, 2])))
                first_id = stream.session_id
                stop(process)
                process = start_xmem_server(hashed_checkpoint, engine_repository, port)
                wait_ready(url, process)
                after = stream.send(frames[3])
                assert stream.resumed == 1 and stream.session_id != first_id
                assert after.tracked == [1, 2] and after.mask is not None
                assert after.mask.shape == frames.shape[1:3] and set(after.objects) <= {1, 2}
                state = client.session(stream.session_id).info()
                assert state["frames_processed"] == 2 and state["objects"] == [1, 2]  # primer + frame 3
        assert [r.tracked for r in before] == [[1, 2]] * 3
    finally:
        stop(process)
