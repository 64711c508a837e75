"""What an attacker or a careless client sends, on a real server (issue 14): a thin strip
image, integers past Python's 4300-digit limit, huge echoed values, uploads named by the
server's paths, and a server bug; each gets a bounded 4xx (or a counted, tagged 500) and
the session goes on."""

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

from server.media import MediaError, check_frame_size
from server.tasks.interpolation.service import InterpolationService
from tests.server.support import RunningServer, panning_frames, png, receive_frame_answer, running_server
from tests.server.test_segmentation import xmem_settings

HUGE = "9" * 5000  # past Python's int-to-string limit of 4300 digits
MAX_ERROR_BYTES = 2000  # what an error answer may weigh, whatever was sent


def strip_png(width: int = 8_294_400) -> bytes:
    """A 24 KB PNG of width×1 pixels: fewer pixels than 4K, padded it would be 32×width."""
    out = io.BytesIO()
    Image.fromarray(np.zeros((1, width, 3), np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_a_thin_strip_is_refused_before_anything_is_allocated(server: RunningServer) -> None:
    data = strip_png()
    assert len(data) < 64 * 1024
    files = {"frame0": ("a.png", data, "image/png"), "frame1": ("b.png", data, "image/png")}
    response = httpx.post(f"{server.url}/v1/interpolate", files=files, timeout=60)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "image_too_large"
    assert "1:16" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("width", "height", "says"),
    [(8_294_400, 1, "1:16"), (3841, 2161, "the limit is"), (1700, 100, "1:16"), (0, 10, "no pixels")],
)
def test_frame_sizes_are_bounded_before_decoding(width: int, height: int, says: str) -> None:
    with pytest.raises(MediaError, match=says):
        check_frame_size(width, height, 3840 * 2160)
    check_frame_size(3840, 2160, 3840 * 2160)  # 4K itself passes, padded to 3840×2176
    check_frame_size(1600, 100, 3840 * 2160)  # 16:1 passes


async def exchange(url: str, messages: list[str | bytes]) -> list[dict[str, Any]]:
    """Each message sent; after each frame (bytes), its answer; after a text, its error."""
    answers = []
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        for message in messages:
            await ws.send(message)
            if isinstance(message, bytes):
                answers.append((await receive_frame_answer(ws))[1])
            else:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    return answers


def test_huge_integers_in_headers_are_errors_and_the_session_goes_on(server: RunningServer) -> None:
    """frame_index and pts past 4300 digits, and a frame_index of 4300 nines (which once
    poisoned its session: every later frame closed 1011, even after a reconnect)."""
    session = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate"}).json()
    frames = [png(f) for f in panning_frames(3)]
    messages: list[str | bytes] = [
        frames[0],
        f'{{"type": "frame", "frame_index": {HUGE}}}',
        f'{{"type": "frame", "pts": {HUGE}}}',
        f'{{"type": "frame", "frame_index": {"9" * 4300}}}',
        frames[1],
    ]
    answers = asyncio.run(exchange(session["stream_url"], messages))
    assert [a["type"] for a in answers] == ["frame_done", "error", "error", "error", "frame_done"]
    assert [a["code"] for a in answers[1:4]] == ["invalid_json", "invalid_json", "invalid_message"]
    assert all(len(json.dumps(a)) < MAX_ERROR_BYTES for a in answers)
    assert answers[4]["frame_index"] == 1 and answers[4]["results"] == 1
    again = asyncio.run(exchange(session["stream_url"], [frames[2]]))  # a reconnect: still healthy
    assert again[0]["type"] == "frame_done" and again[0]["frame_index"] == 2


def test_echoed_values_are_cut_short(server: RunningServer) -> None:
    """A megabyte model name comes back as a short prefix, in a short answer."""
    response = httpx.post(
        f"{server.url}/v1/sessions", json={"task": "interpolate", "model": "m" * 1_000_000}, timeout=60
    )
    assert response.status_code == 404 and len(response.content) < MAX_ERROR_BYTES
    many = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate", "timesteps": ["x"] * 60})
    assert many.status_code == 422 and len(many.content) < 4 * MAX_ERROR_BYTES
    assert len(many.json()["error"]["details"]) == 20  # of 60 errors
    assert many.json()["error"]["message"].endswith("more characters)")


def test_a_bad_upload_is_named_as_the_client_named_it(server: RunningServer) -> None:
    files = {"video": ("holiday.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(4000), "video/mp4")}
    response = httpx.post(f"{server.url}/v1/jobs", files=files, data={"task": "interpolate"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_video"
    message = response.json()["error"]["message"]
    assert "holiday.mp4" in message and "/tmp" not in message and "source" not in message


def test_a_server_bug_is_a_counted_tagged_500_on_a_kept_connection(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that raises what no handler knows: JSON 500 with the request's id, counted in
    vidserve_requests_total as a server error, and the connection is kept for the next request."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(InterpolationService, "interpolate", broken)
    pair = panning_frames(2)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    before = server.metric("vidserve_requests_total", task="interpolate", outcome="server_error")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/v1/interpolate", files=files, headers={"X-Request-ID": "bug-1"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert response.headers["x-request-id"] == "bug-1"
        assert response.headers.get("connection", "keep-alive") != "close"
        assert client.get("/healthz").status_code == 200
    after = server.metric("vidserve_requests_total", task="interpolate", outcome="server_error")
    assert after == before + 1


# --- segmentation ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def xmem_server(hashed_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    with running_server(xmem_settings(hashed_checkpoint, engine_repository)) as running:
        yield running


def test_huge_numbers_in_masks_are_client_errors(xmem_server: RunningServer) -> None:
    """An RLE count or an object id past 4300 digits, a compressed RLE of endless
    continuation groups, and a 100,000-long size list: each a short 4xx, never a 500."""
    body = {"task": "segment", "processing_size": None, "max_objects": 2}
    session = httpx.post(f"{xmem_server.url}/v1/sessions", json=body).json()
    url = f"{xmem_server.url}/v1/sessions/{session['id']}"
    frame = png(panning_frames(1)[0])
    cases = [
        ("frames", {"rle": f'{{"1": {{"size": [64, 96], "counts": [{HUGE}]}}}}'}, "invalid_rle"),
        ("frames", {"rle": '{"1": {"size": [64, 96], "counts": "' + "o" * 10_000 + '"}}'}, "invalid_rle"),
        ("frames", {"rle": '{"1": {"size": [' + "1," * 100_000 + '1], "counts": [6144]}}'}, "invalid_rle"),
        ("frames", {"rle": '{"1": {"size": [64, 96], "counts": [99999999999999999999999]}}'}, "invalid_rle"),
        (
            "frames",
            {"objects": HUGE, "rle": '{"1": {"size": [64, 96], "counts": [6144]}}'},
            "invalid_object_id",
        ),
    ]
    for path, data, code in cases:
        response = httpx.post(f"{url}/{path}", files={"image": ("f.png", frame, "image/png")}, data=data)
        assert 400 <= response.status_code < 500, (code, response.status_code, response.text[:200])
        assert response.json()["error"]["code"] == code and len(response.content) < MAX_ERROR_BYTES
    mask = {"format": "rle", "objects": {HUGE: {"size": [64, 96], "counts": [6144]}}}
    response = httpx.post(f"{url}/mask", json={"mask": mask})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_object_id"
    assert len(response.content) < MAX_ERROR_BYTES


def test_factor_is_bounded_by_the_pixels_it_asks_for(server: RunningServer, tmp_path: Path) -> None:
    """Factor 64 at 960×540 from a 9 KB upload took 1.33 GB: rows × padded pixels per frame is
    bounded (413 naming the limit and the most that fits) on REST, sessions and jobs alike."""
    frame = np.zeros((540, 960, 3), np.uint8)
    data = png(frame)
    response = httpx.post(
        f"{server.url}/v1/interpolate",
        files={"frame0": data, "frame1": data},
        data={"factor": "64"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "output_too_large" and "VIDSERVE_MAX_OUTPUT_PIXELS" in error["message"]
    assert "at most 31 per frame (factor 32)" in error["message"]
    session = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate", "factor": 64}).json()
    (answer,) = asyncio.run(exchange(session["stream_url"], [data]))
    assert answer["type"] == "error" and answer["code"] == "output_too_large" and answer["frame_index"] == 0
    fine = httpx.post(
        f"{server.url}/v1/interpolate",
        files={"frame0": data, "frame1": data},
        data={"factor": "8"},
        timeout=120,
    )
    assert fine.status_code == 200
    video = tmp_path / "still.mp4"
    from fractions import Fraction

    from models.video import VideoWriter

    with VideoWriter(video, width=960, height=540, fps=Fraction(10)) as writer:
        writer.write(frame, 0.0)
        writer.write(frame, 0.1)
    with video.open("rb") as upload:
        job = httpx.post(
            f"{server.url}/v1/jobs",
            files={"video": ("still.mp4", upload, "video/mp4")},
            data={"task": "interpolate", "factor": "64"},
        )
    assert job.status_code == 413 and job.json()["error"]["code"] == "output_too_large"
