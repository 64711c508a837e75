"""The scheduler over the real engine: work from several sessions and requests shares one
engine call, each session's frames stay in order, and a full queue answers 429 / 1013."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.rife.inference import Interpolator, to_uint8
from models.rife.loading import load_interpolator
from server.scheduler import batcher
from server.tasks.interpolation.service import InterpolationService
from tests.server.support import (
    RunningServer,
    decode,
    eventually,
    panning_frames,
    png,
    receive_frame_answer,
    running_server,
    server_settings,
)

MODEL = "rife-4.0"


@pytest.fixture(scope="module")
def slow_batching_server(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """Batches of three rows run as soon as they are full (what these tests send together);
    the long window only bounds the wait, so a late client on a loaded machine still joins."""
    settings = server_settings(
        rife_v40_weights, engine_repository, max_queue_delay_ms=10_000, max_batch_size=3, max_queue_size=64
    )
    with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def reference(rife_v40_weights: Path) -> Interpolator:
    """The offline pipeline on the eager network: what each pair must give, alone."""
    return load_interpolator(MODEL, engine="eager", weights=rife_v40_weights, progress=False)


def expected(reference: Interpolator, frame0: np.ndarray, frame1: np.ndarray, t: float) -> np.ndarray:
    return to_uint8(reference.interpolate(frame0, frame1, [t])[0])


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Batched TorchScript against eager alone: equal up to uint8 rounding."""
    assert got.shape == want.shape
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1


def engine_calls(server: RunningServer) -> tuple[float, float]:
    """(engine calls, rows run) so far, from /metrics."""
    return (
        server.metric("vidserve_inference_exec_count_total", model=MODEL),
        server.metric("vidserve_inference_count_total", model=MODEL),
    )


def test_concurrent_requests_share_one_engine_call(
    slow_batching_server: RunningServer, reference: Interpolator
) -> None:
    pairs = [panning_frames(2, step=2 + i) for i in range(3)]
    calls_before, rows_before = engine_calls(slow_batching_server)

    def post(pair: list[np.ndarray]) -> httpx.Response:
        files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
        return httpx.post(f"{slow_batching_server.url}/v1/interpolate", files=files, timeout=60)

    responses: list[httpx.Response] = [httpx.Response(0)] * 3
    threads = [
        threading.Thread(target=lambda i=i: responses.__setitem__(i, post(pairs[i]))) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    calls_after, rows_after = engine_calls(slow_batching_server)
    assert (calls_after - calls_before, rows_after - rows_before) == (1, 3)
    for pair, response in zip(pairs, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_close(decode(response.content), expected(reference, pair[0], pair[1], 0.5))


async def open_session(server: RunningServer, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{server.url}/v1/sessions", json={"task": "interpolate", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def stream_all_at_once(server: RunningServer, frames: list[np.ndarray]) -> list[Any]:
    """Open a session, send every frame without waiting, then read every answer in order."""
    session = await open_session(server, factor=2)
    answers = []
    async with connect(session["stream_url"]) as ws:
        assert json.loads(await ws.recv())["type"] == "session"
        for frame in frames:
            await ws.send(png(frame))
        for _ in frames:
            answers.append(await receive_frame_answer(ws))
    return answers


def test_sessions_batch_together_and_keep_their_order(
    slow_batching_server: RunningServer, reference: Interpolator
) -> None:
    streams = [panning_frames(4, step=1 + i) for i in range(3)]
    calls_before, rows_before = engine_calls(slow_batching_server)

    async def run() -> list[list[Any]]:
        return await asyncio.gather(*(stream_all_at_once(slow_batching_server, f) for f in streams))

    all_answers = asyncio.run(run())
    calls_after, rows_after = engine_calls(slow_batching_server)
    # 3 pairs per session; the sessions' pairs are ready together, so they share calls
    assert rows_after - rows_before == 9
    assert calls_after - calls_before == 3
    for frames, answers in zip(streams, all_answers, strict=True):
        assert [done["frame_index"] for _, done in answers] == [0, 1, 2, 3]
        assert [done["type"] for _, done in answers] == ["frame_done"] * 4
        for k, (results, _) in enumerate(answers[1:], start=1):
            ((header, data),) = results
            assert header["source"] == [k - 1, k] and header["timestep"] == 0.5
            assert_close(decode(data), expected(reference, frames[k - 1], frames[k], 0.5))


@pytest.fixture(scope="module")
def tiny_queue_server(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """Room for one request of 3 rows and one more row, which fills the batch of 4 and so runs
    it (``release``); until then the rows wait, whatever the machine's speed."""
    settings = server_settings(
        rife_v40_weights, engine_repository, max_queue_delay_ms=10_000, max_batch_size=4, max_queue_size=4
    )
    with running_server(settings) as running:
        yield running


def wait_for_three_rows(server: RunningServer) -> None:
    deadline = time.monotonic() + 30
    while server.metric("vidserve_pending_request_count", model=MODEL) < 3:
        assert time.monotonic() < deadline, "the 3 rows never reached the queue"
        time.sleep(0.02)


def fill_queue(server: RunningServer) -> threading.Thread:
    """Queue 3 rows (factor 4) and return once they are waiting for their batch."""
    pair = panning_frames(2)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    url = f"{server.url}/v1/interpolate"
    thread = threading.Thread(target=lambda: httpx.post(url, files=files, data={"factor": "4"}, timeout=180))
    thread.start()
    wait_for_three_rows(server)
    return thread


def add_the_fourth_row(server: RunningServer) -> None:
    """Once 3 rows wait, one more fills the held batch, which then runs (not after the
    fixture's 10 s window)."""
    wait_for_three_rows(server)
    pair = panning_frames(2)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, data={"factor": "2"}, timeout=120)
    assert response.status_code == 200


def release(server: RunningServer, holder: threading.Thread) -> None:
    """The fourth row: the holder gets its answer."""
    add_the_fourth_row(server)
    holder.join(timeout=120)
    assert not holder.is_alive()


def test_full_queue_answers_429(tiny_queue_server: RunningServer) -> None:
    holder = fill_queue(tiny_queue_server)
    pair = panning_frames(2)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    response = httpx.post(
        f"{tiny_queue_server.url}/v1/interpolate", files=files, data={"factor": "4"}, timeout=120
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "overloaded"
    assert response.headers["retry-after"] == "1"
    release(tiny_queue_server, holder)


def test_full_queue_closes_the_stream_with_1013(tiny_queue_server: RunningServer) -> None:
    """The overloaded frame was not run, so it gives its index back: sent again after the
    reconnect with the same frame_index, as the protocol tells clients to, it is taken (it
    was refused as frame_index_not_increasing), and numbering stays the client's."""
    frames = panning_frames(2)

    async def run() -> tuple[dict[str, Any], int | None, dict[str, Any]]:
        session = await open_session(tiny_queue_server, factor=4)
        async with connect(session["stream_url"]) as ws:
            await ws.recv()
            await ws.send(png(frames[0]))
            await receive_frame_answer(ws)
            holder = await asyncio.to_thread(fill_queue, tiny_queue_server)
            await ws.send(png(frames[1]))
            _, error = await receive_frame_answer(ws)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            await asyncio.to_thread(release, tiny_queue_server, holder)
        async with connect(session["stream_url"]) as ws:  # as docs/protocol.md §9 resends it
            await ws.recv()
            await ws.send(json.dumps({"type": "frame", "frame_index": 1}))
            await ws.send(png(frames[1]))
            await asyncio.to_thread(add_the_fourth_row, tiny_queue_server)  # its 3 rows and this one
            _, resent = await receive_frame_answer(ws)
        return error, closed.value.rcvd.code if closed.value.rcvd else None, resent

    error, code, resent = asyncio.run(run())
    assert error == {**error, "type": "error", "frame_index": 1, "code": "overloaded"}
    assert code == 1013
    assert resent["type"] == "frame_done" and resent["frame_index"] == 1 and resent["results"] == 3


def test_a_closed_session_is_cancelled_between_batches(slow_batching_server: RunningServer) -> None:
    """DELETE while a frame's rows wait for their batch: they are dropped, never run, and
    the frame is still answered (with an error naming it) before the socket closes."""
    server = slow_batching_server
    frames = panning_frames(2)

    async def run() -> tuple[dict[str, Any], int | None, float]:
        session = await open_session(server, factor=2)
        async with connect(session["stream_url"]) as ws:
            await ws.recv()
            await ws.send(png(frames[0]))
            await receive_frame_answer(ws)
            calls_before, _ = await asyncio.to_thread(engine_calls, server)
            await ws.send(png(frames[1]))

            async def is_queued() -> bool:
                return (
                    await asyncio.to_thread(server.metric, "vidserve_pending_request_count", model=MODEL) >= 1
                )

            await eventually(is_queued, "frame 1's row queued for its batch")
            async with httpx.AsyncClient() as client:
                await client.delete(f"{server.url}/v1/sessions/{session['id']}")
            _, error = await receive_frame_answer(ws)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            calls_after, _ = await asyncio.to_thread(engine_calls, server)
            return error, closed.value.rcvd.code if closed.value.rcvd else None, calls_after - calls_before

    error, code, calls = asyncio.run(run())
    assert error == {**error, "type": "error", "frame_index": 1, "code": "session_closed"}
    assert code == 1000
    assert calls == 0
    assert server.metric("vidserve_pending_request_count", model=MODEL) == 0


def test_a_batch_waits_for_announced_work(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame still being decoded when another is ready joins its batch, even when it takes
    longer than the batching window (VIDSERVE_MAX_QUEUE_DELAY_MS, 2 ms here)."""
    # why: the 0.25 s hold bounds how long decoding may take; a loaded CI machine can take longer
    monkeypatch.setattr(batcher, "MAX_HOLD_S", 30.0)
    service = server.state.running(MODEL)
    assert isinstance(service, InterpolationService)
    scheduler = service.scheduler
    frames = panning_frames(3)
    prepared = [service.prepare(f, 1.0) for f in frames]
    sizes: list[int] = []

    async def run() -> None:
        original = scheduler.on_batch
        scheduler.on_batch = lambda stats: sizes.append(stats.size)
        try:
            scheduler.expect("late")
            early = asyncio.ensure_future(service.interpolate("early", prepared[0], prepared[1], [0.5], None))
            await asyncio.sleep(0.1)  # "late" is decoding, well past the 2 ms window
            late = asyncio.ensure_future(service.interpolate("late", prepared[1], prepared[2], [0.5], None))
            await asyncio.gather(early, late)
        finally:
            scheduler.on_batch = original

    asyncio.run_coroutine_threadsafe(run(), scheduler.loop).result(timeout=60)
    assert sizes == [2]
