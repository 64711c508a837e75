"""Bad input gets a clear error: 4xx with a JSON body over REST, an error message naming
the frame (or a close code with a reason) over the websocket. The server and every other
session go on."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.server.support import (
    RunningServer,
    panning_frames,
    png,
    receive_frame_answer,
    running_server,
    server_settings,
)

GOOD = panning_frames(3)


def post_pair(server: RunningServer, frame0: bytes, frame1: bytes, **data: Any) -> httpx.Response:
    files = {"frame0": frame0, "frame1": frame1}
    return httpx.post(f"{server.url}/v1/interpolate", files=files, data=data, timeout=60)


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    message: str = error["message"]
    return message


@pytest.mark.parametrize(
    ("frame0", "data", "status", "code"),
    [
        (b"this is not an image", {}, 400, "invalid_image"),
        (png(GOOD[0])[:100], {}, 400, "invalid_image"),  # a truncated PNG
        (png(np.zeros((64, 80, 3), np.uint8)), {}, 422, "invalid_argument"),  # sizes differ
        (png(GOOD[0]), {"timesteps": "0.5,1.0"}, 422, "invalid_argument"),
        (png(GOOD[0]), {"timesteps": "0"}, 422, "invalid_argument"),
        (png(GOOD[0]), {"timesteps": "half"}, 422, "invalid_argument"),
        (png(GOOD[0]), {"factor": "1"}, 422, "invalid_request"),
        (png(GOOD[0]), {"factor": str(10**9)}, 422, "invalid_request"),  # never builds 10⁹ timesteps
        (png(GOOD[0]), {"timesteps": "[" * 100_000}, 422, "invalid_argument"),  # nests past recursion
        (png(GOOD[0]), {"factor": "2", "timesteps": "0.5"}, 422, "invalid_argument"),
        (png(GOOD[0]), {"scale": "3"}, 422, "invalid_argument"),
        (png(GOOD[0]), {"model": "rife-9.9"}, 404, "unknown_model"),
        (png(GOOD[0]), {"model": "rife-4.26"}, 404, "unknown_model"),  # known, not served here
        (png(GOOD[0]), {"output_format": "gif"}, 422, "invalid_request"),
        (png(GOOD[0]), {"scene_change_threshold": "2"}, 422, "invalid_argument"),
    ],
)
def test_rest_bad_input(
    server: RunningServer, frame0: bytes, data: dict[str, str], status: int, code: str
) -> None:
    assert_error(post_pair(server, frame0, png(GOOD[1]), **data), status, code)


def test_rest_missing_frame(server: RunningServer) -> None:
    response = httpx.post(f"{server.url}/v1/interpolate", files={"frame0": png(GOOD[0])})
    assert "frame1" in assert_error(response, 422, "invalid_request")


def test_image_over_the_pixel_limit(rife_v40_weights: Path, engine_repository: Path) -> None:
    settings = server_settings(rife_v40_weights, engine_repository, max_pixels=64 * 96 - 1)
    with running_server(settings) as small:
        message = assert_error(post_pair(small, png(GOOD[0]), png(GOOD[1])), 413, "image_too_large")
        assert "6144 pixels" in message and "6143" in message
        session = httpx.post(f"{small.url}/v1/sessions", json={"task": "interpolate"}).json()
        errors = asyncio.run(stream_messages(session["stream_url"], [png(GOOD[0])]))
        assert errors[0][1] == {**errors[0][1], "type": "error", "frame_index": 0, "code": "image_too_large"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "interpolate", "factor": 1}, "factor"),
        ({"task": "interpolate", "timesteps": [0.5, 1.5]}, "timesteps"),
        ({"task": "interpolate", "timesteps": [0.75, 0.25]}, "increase"),
        ({"task": "interpolate", "factor": 2, "timesteps": [0.5]}, "not both"),
        ({"task": "interpolate", "scale": 0.3}, "scale"),
        ({"task": "interpolate", "output_format": "bmp"}, "output_format"),
        ({"task": "paint"}, "task"),
        ({"task": "interpolate", "factr": 4}, "factr"),
        ({"factor": 2}, "task"),
    ],
)
def test_session_bad_settings(server: RunningServer, body: dict[str, Any], field: str) -> None:
    response = httpx.post(f"{server.url}/v1/sessions", json=body)
    assert field in assert_error(response, 422, "invalid_request")


def test_session_unknown_model(server: RunningServer) -> None:
    response = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate", "model": "rife-0"})
    assert_error(response, 404, "unknown_model")


def test_unknown_session(server: RunningServer) -> None:
    assert_error(httpx.get(f"{server.url}/v1/sessions/nope"), 404, "unknown_session")
    assert_error(httpx.delete(f"{server.url}/v1/sessions/nope"), 404, "unknown_session")

    async def run() -> tuple[int, str]:
        async with connect(f"{server.ws_url}/v1/sessions/nope/stream") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason

    code, reason = asyncio.run(run())
    assert code == 4404 and "nope" in reason


def test_expired_session(rife_v40_weights: Path, engine_repository: Path) -> None:
    """Idle past the TTL: the session is gone (410, close 4410) and its state freed."""
    # why 6 s: long enough that creating, connecting and one frame fit inside it on a loaded
    # 2-core machine (2 s did not always), short enough for the suite
    with running_server(server_settings(rife_v40_weights, engine_repository, session_ttl_s=6.0)) as short:
        session = httpx.post(f"{short.url}/v1/sessions", json={"task": "interpolate"}).json()

        async def idle_stream() -> tuple[int, str]:
            async with connect(session["stream_url"]) as ws:
                await ws.recv()
                await ws.send(png(GOOD[0]))
                await receive_frame_answer(ws)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

        code, reason = asyncio.run(idle_stream())
        assert code == 4410 and "idle" in reason
        assert_error(httpx.get(f"{short.url}/v1/sessions/{session['id']}"), 410, "session_expired")
        assert len(short.state.sessions) == 0
        assert short.metric("vidserve_active_sessions", task="interpolate") == 0


async def stream_messages(
    url: str, messages: list[bytes | str], answered: set[int] | None = None
) -> list[Any]:
    """Send each message and collect its answer: every binary message (a frame) has one, and
    so do the text messages whose positions are in ``answered`` (those that draw an error)."""
    answers = []
    async with connect(url) as ws:
        await ws.recv()
        for position, message in enumerate(messages):
            await ws.send(message)
            if isinstance(message, bytes):
                answers.append(await receive_frame_answer(ws))
            elif position in (answered or set()):
                answers.append(([], json.loads(await ws.recv())))
    return answers


def test_a_session_survives_bad_frames(server: RunningServer) -> None:
    """Each bad message is answered with an error naming its frame; good frames go on, and
    a bad frame is never used as the start of the next pair."""
    session = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate"}).json()
    other = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    small = io.BytesIO()
    other.save(small, "PNG")
    messages: list[bytes | str] = [
        png(GOOD[0]),  # frame 0
        b"\x89PNG\r\n\x1a\n broken",  # frame 1: a corrupt PNG
        small.getvalue(),  # frame 2: another size
        "{not json",  # no frame: a text message that is not JSON
        "[" * 100_000,  # no frame: JSON nested deeper than the parser recurses
        json.dumps({"type": "frame", "frame_index": "x"}),  # a header with a bad field
        json.dumps({"type": "subscribe"}),  # an unknown message type
        json.dumps({"frame_index": 9, "pts": float("nan")}),  # NaN is no time
        json.dumps({"frame_index": 2}),  # frame 2 again: indices must increase
        png(GOOD[1]),
        png(GOOD[2]),  # frame 3: pairs with frame 0, the last good one
    ]
    answers = asyncio.run(stream_messages(session["stream_url"], messages, answered={3, 4, 5, 6, 7}))
    codes = [(done["type"], done.get("code"), done["frame_index"]) for _, done in answers]
    assert codes == [
        ("frame_done", None, 0),
        ("error", "invalid_image", 1),
        ("error", "size_mismatch", 2),
        ("error", "invalid_json", None),
        ("error", "invalid_json", None),
        ("error", "invalid_message", None),
        ("error", "invalid_message", None),
        ("error", "invalid_message", None),
        ("error", "frame_index_not_increasing", 2),
        ("frame_done", None, 3),
    ]
    results, _ = answers[-1]
    assert results[0][0]["source"] == [0, 3]
    counters = httpx.get(f"{server.url}/v1/sessions/{session['id']}").json()
    totals = [counters[k] for k in ("frames_in", "frames_done", "frames_failed", "dropped")]
    assert totals == [5, 2, 3, 0]


def test_message_over_the_size_limit_closes_1009(rife_v40_weights: Path, engine_repository: Path) -> None:
    settings = server_settings(rife_v40_weights, engine_repository, max_message_bytes=4096)
    with running_server(settings) as strict:
        session = httpx.post(f"{strict.url}/v1/sessions", json={"task": "interpolate"}).json()

        async def run() -> int | None:
            async with connect(session["stream_url"], max_size=None) as ws:
                await ws.recv()
                await ws.send(b"\0" * 10_000)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

        assert asyncio.run(run()) == 1009
        response = post_pair(strict, b"\0" * 10_000, png(GOOD[1]))
        assert_error(response, 413, "payload_too_large")
        # far over every part's limit: refused from Content-Length, before the body is spooled
        huge = post_pair(strict, b"\0" * (2 << 20), png(GOOD[1]))
        assert "request body is larger" in assert_error(huge, 413, "payload_too_large")
        # the same with no Content-Length (chunked): answered 413 once past the limit (how much of
        # the body reached the disk is not observed here)
        chunked = post_chunked(strict, b"\0" * (2 << 20), png(GOOD[1]))
        assert "request body is larger" in assert_error(chunked, 413, "payload_too_large")
        assert chunked.request.headers.get("transfer-encoding") == "chunked"
        assert httpx.get(f"{strict.url}/readyz").status_code == 200  # still serving


def post_chunked(server: RunningServer, frame0: bytes, frame1: bytes) -> httpx.Response:
    """A multipart pair sent as a stream of chunks, so the request carries no Content-Length."""
    request = httpx.Request("POST", server.url, files={"frame0": frame0, "frame1": frame1})
    content_type = request.headers["content-type"]
    body = request.read()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    headers = {"content-type": content_type}
    return httpx.post(f"{server.url}/v1/interpolate", content=chunks(), headers=headers, timeout=60)


def test_more_timesteps_than_the_queue_holds(rife_v40_weights: Path, engine_repository: Path) -> None:
    """A request that could never fit the queue is a 422, not an endless 429."""
    with running_server(server_settings(rife_v40_weights, engine_repository, max_queue_size=2)) as small:
        response = httpx.post(f"{small.url}/v1/sessions", json={"task": "interpolate", "factor": 4})
        assert "VIDSERVE_MAX_QUEUE_SIZE" in assert_error(response, 422, "too_many_rows")
        assert_error(post_pair(small, png(GOOD[0]), png(GOOD[1]), factor="4"), 422, "too_many_rows")
