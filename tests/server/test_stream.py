"""A client streams a clip through a session over a real websocket and gets every
in-between frame back, in order, on every engine backend present."""

from __future__ import annotations

import asyncio
import json
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
from models.runtime import ENGINE_KINDS, EngineKind
from tests.server.support import (
    RunningServer,
    decode,
    panning_frames,
    png,
    receive_frame_answer,
    running_server,
    server_settings,
)


@pytest.fixture(scope="module")
def reference(rife_v40_weights: Path) -> Interpolator:
    return load_interpolator("rife-4.0", engine="eager", weights=rife_v40_weights, progress=False)


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def backend_server(
    request: pytest.FixtureRequest, rife_v40_weights: Path, engine_repository: Path
) -> Iterator[RunningServer]:
    engine: EngineKind = request.param
    if engine == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    with running_server(server_settings(rife_v40_weights, engine_repository, engine=engine)) as running:
        yield running


def create(server: RunningServer, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate", **body})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/sessions/{response.json()['id']}"
    created: dict[str, Any] = response.json()
    return created


async def stream(url: str, frames: list[np.ndarray], pts: list[float] | None = None) -> list[Any]:
    """Send each frame (with a header when ``pts`` is given) and collect its answer."""
    answers = []
    async with connect(url) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "session"
        for k, frame in enumerate(frames):
            if pts is not None:
                await ws.send(json.dumps({"type": "frame", "frame_index": 10 + k, "pts": pts[k]}))
            await ws.send(png(frame))
            answers.append(await receive_frame_answer(ws))
    return answers


def test_stream_returns_every_in_between_frame_in_order(
    backend_server: RunningServer, reference: Interpolator
) -> None:
    frames = panning_frames(4)
    session = create(backend_server, factor=4)
    answers = asyncio.run(stream(session["stream_url"], frames))

    first_results, first_done = answers[0]
    assert first_results == [] and first_done == {**first_done, "type": "frame_done", "results": 0}
    for k, (results, done) in enumerate(answers[1:], start=1):
        assert done == {**done, "type": "frame_done", "frame_index": k, "results": 3, "scene_change": False}
        assert [h["timestep"] for h, _ in results] == [0.25, 0.5, 0.75]
        assert [h["part"] for h, _ in results] == [0, 1, 2]
        for header, data in results:
            assert header["source"] == [k - 1, k] and header["parts"] == 3
            want = to_uint8(reference.interpolate(frames[k - 1], frames[k], [header["timestep"]])[0])
            got = decode(data)
            # why 2: fp32 engines differ from eager by ~1e-5, which can cross a rounding edge;
            # a wrong pair or timestep differs by tens of levels
            assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 2

    counters = httpx.get(f"{backend_server.url}/v1/sessions/{session['id']}").json()
    assert counters == {
        **counters,
        "state": "open",
        "frames_in": 4,
        "frames_done": 4,
        "frames_failed": 0,
        "in_flight": 0,
        "dropped": 0,
        "outputs": 9,
        "frame_size": [64, 96],
    }


def test_pts_and_frame_indices_come_from_the_client(server: RunningServer) -> None:
    session = create(server, timesteps=[0.25, 0.5])
    answers = asyncio.run(stream(session["stream_url"], panning_frames(2), pts=[1.0, 2.0]))
    results, done = answers[1]
    assert done["frame_index"] == 11
    assert [(h["source"], h["timestep"], h["pts"]) for h, _ in results] == [
        ([10, 11], 0.25, 1.25),
        ([10, 11], 0.5, 1.5),
    ]


def test_a_scene_change_returns_the_earlier_frame(server: RunningServer) -> None:
    frame0 = panning_frames(1)[0]
    cut = np.ascontiguousarray(np.flip(frame0, axis=(0, 1)) // 3)
    session = create(server, factor=2)
    answers = asyncio.run(stream(session["stream_url"], [frame0, cut]))
    results, done = answers[1]
    assert done["scene_change"] is True
    ((header, data),) = results
    assert header["scene_change"] is True
    np.testing.assert_array_equal(decode(data), frame0)


def test_output_formats(server: RunningServer) -> None:
    frames = panning_frames(2)
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF")):
        session = create(server, factor=2, output_format=fmt)
        ((header, data),) = asyncio.run(stream(session["stream_url"], frames))[1][0]
        assert header["format"] == fmt and data.startswith(magic)


def test_delete_closes_the_stream_and_frees_the_session(server: RunningServer) -> None:
    session = create(server, factor=2)

    async def run() -> int | None:
        async with connect(session["stream_url"]) as ws:
            await ws.recv()
            await ws.send(png(panning_frames(1)[0]))
            await receive_frame_answer(ws)
            async with httpx.AsyncClient() as client:
                deleted = await client.delete(f"{server.url}/v1/sessions/{session['id']}")
            assert deleted.status_code == 200 and deleted.json()["state"] == "closed"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(run()) == 1000
    gone = httpx.get(f"{server.url}/v1/sessions/{session['id']}")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "session_closed"


def test_one_stream_per_session(server: RunningServer) -> None:
    session = create(server, factor=2)

    async def run() -> int | None:
        async with connect(session["stream_url"]) as first:
            await first.recv()
            async with connect(session["stream_url"]) as second:
                with pytest.raises(ConnectionClosed) as closed:
                    await second.recv()
                return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(run()) == 4409


def test_frame_numbers_go_on_across_reconnects(server: RunningServer) -> None:
    """A client that reconnects (after a 1013, say) pairs its next frame with the last one."""
    session = create(server, factor=2)
    frames = panning_frames(3)
    asyncio.run(stream(session["stream_url"], frames[:2]))
    ((results, done),) = asyncio.run(stream(session["stream_url"], frames[2:]))
    assert done["frame_index"] == 2 and results[0][0]["source"] == [1, 2]
