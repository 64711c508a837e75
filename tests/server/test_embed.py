"""The clip encoder through a real server: ``POST /v1/clips`` with frames and with a video,
embed sessions over the websocket, embed jobs, windows of several sessions sharing their
engine calls by token count, and the errors of bad clips and settings.

The model is vit-s on the hashed weights (TorchScript); what the server answers is checked
against the offline pipeline and the network itself on the same frames."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect

from models.steps import run_steps
from models.video import VideoWriter, read_frames
from models.videomae.checkpoint import load_videomae
from models.videomae.export import eager_engines
from models.videomae.frames import fit
from models.videomae.inference import ClipState, Window, WindowSpec, execute, frame_steps
from models.videomae.labels import k400_labels
from tests.embed_support import EMBED_MODEL, SMALL_WINDOW, embed_settings
from tests.server.support import RunningServer, panning_frames, png, running_server

# why: TorchScript against eager on the same weights; float sums in another order
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def embed_server(videomae_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    with running_server(embed_settings(videomae_checkpoint, engine_repository)) as running:
        yield running


@pytest.fixture(scope="module")
def offline(videomae_checkpoint: Path) -> Any:
    """The same checkpoint, eager, outside the server."""
    return load_videomae(videomae_checkpoint)


def fields(**extra: Any) -> dict[str, str]:
    return {k: str(v) for k, v in {**SMALL_WINDOW, **extra}.items()}


def frame_files(frames: Sequence[np.ndarray]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("frames", (f"{i:03d}.png", png(f), "image/png")) for i, f in enumerate(frames)]


def offline_windows(net: Any, spec: WindowSpec, frames: Sequence[np.ndarray]) -> list[Window]:
    state, engines = ClipState(spec), eager_engines(net)
    windows = []
    for index, frame in enumerate(frames):
        window = run_steps(frame_steps(net.config, state, frame, index, None), lambda r: execute(engines, r))
        if window is not None:
            windows.append(window)
    return windows


def post_clip(server: RunningServer, files: Any, data: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/clips", files=files, data=data, timeout=300)


def assert_segments(segments: list[dict[str, Any]], windows: list[Window]) -> None:
    assert len(segments) == len(windows)
    for segment, window in zip(segments, windows, strict=True):
        assert (segment["start_frame"], segment["end_frame"]) == (window.start_index, window.end_index)
        np.testing.assert_allclose(segment["embedding"], window.embedding, atol=TOLERANCE)
        assert segment["tokens"] == window.tokens and segment["tokens_total"] == window.tokens_total
        best = int(np.argmax(window.logits))
        assert segment["labels"][0]["index"] == best and segment["labels"][0]["label"] == k400_labels()[best]


@pytest.mark.parametrize(("keep_ratio", "drop"), [(1.0, "tube"), (0.5, "tube"), (0.5, "static")])
def test_clip_frames_are_the_offline_pipeline(
    embed_server: RunningServer, offline: Any, keep_ratio: float, drop: str
) -> None:
    """Frames of a slow pan, 15 of them: windows end at frames 6, 10 and 14 (4 sampled frames
    every 2nd, a new window every 4), each what the offline pipeline gives, and the clip's
    embedding their mean."""
    frames = panning_frames(15, 120, 160)
    response = post_clip(embed_server, frame_files(frames), fields(keep_ratio=keep_ratio, drop=drop, top_k=3))
    assert response.status_code == 200, response.text
    body = response.json()
    spec = WindowSpec(4, 2, 4, keep_ratio, drop)  # type: ignore[arg-type]
    windows = offline_windows(offline, spec, frames)
    assert [w.end_index for w in windows] == [6, 10, 14]
    assert_segments(body["segments"], windows)
    assert all(len(s["labels"]) == 3 for s in body["segments"])
    assert body["segments"][0]["tokens"] == (392 if keep_ratio == 1 else 196)
    mean = np.mean([s["embedding"] for s in body["segments"]], axis=0)
    np.testing.assert_allclose(body["embedding"], mean, atol=1e-6)
    assert body["model"] == EMBED_MODEL and body["frames"] == 15 and body["stride"] == 4


def test_a_window_is_the_network_on_its_sampled_frames(embed_server: RunningServer, offline: Any) -> None:
    frames = panning_frames(7, 120, 160)
    (segment,) = post_clip(embed_server, frame_files(frames), fields()).json()["segments"]
    clip = np.stack([fit(frames[i], 224) for i in (0, 2, 4, 6)])
    with torch.inference_mode():
        embedding, _ = offline(torch.from_numpy(clip)[None])
    np.testing.assert_allclose(segment["embedding"], embedding[0].numpy(), atol=TOLERANCE)


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 10) -> Path:
    height, width = frames[0].shape[:2]
    with VideoWriter(path, width=width, height=height, fps=Fraction(fps), crf=12) as writer:
        for index, frame in enumerate(frames):
            writer.write(frame, index / fps)
    return path


def test_clip_video_and_job_give_the_same_segments(
    embed_server: RunningServer, offline: Any, tmp_path: Path
) -> None:
    """A video through POST /v1/clips and through an embed job: the same JSON, each segment
    the offline pipeline on the frames the video decodes to, with their times."""
    video = write_video(tmp_path / "pan.mp4", panning_frames(12, 128, 160))
    decoded = [f.rgb for f in read_frames(video)]
    windows = offline_windows(offline, WindowSpec(4, 2, 4), decoded)
    with video.open("rb") as data:
        response = post_clip(embed_server, {"video": ("pan.mp4", data, "video/mp4")}, fields())
    assert response.status_code == 200, response.text
    clip = response.json()
    assert_segments(clip["segments"], windows)
    second = clip["segments"][1]
    assert second["pts"] == pytest.approx(0.4) and second["end_pts"] == pytest.approx(1.0)
    with video.open("rb") as data:
        submitted = httpx.post(
            f"{embed_server.url}/v1/jobs",
            files={"video": ("pan.mp4", data, "video/mp4")},
            data={"task": "embed", **fields()},
            timeout=60,
        )
    assert submitted.status_code == 202, submitted.text
    job = wait_job(embed_server, submitted.json()["id"])
    assert job["state"] == "done" and job["progress"]["frames_done"] == 12, job
    result = httpx.get(f"{embed_server.url}/v1/jobs/{job['id']}/result", timeout=60)
    assert result.headers["content-type"] == "application/json"
    assert result.json() == clip


def wait_job(server: RunningServer, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished in {timeout} s")


def create_session(server: RunningServer, **extra: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/sessions", json={"task": "embed", **SMALL_WINDOW, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def frame_answer(ws: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """One frame's messages: its window's result (or None), then its frame_done or error."""
    result = None
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if message["type"] == "result":
            result = message
        elif message["type"] in ("frame_done", "error"):
            return result, message


async def stream(session: dict[str, Any], messages: Sequence[bytes | str]) -> list[tuple[Any, Any]]:
    """Send each frame (a header str is sent before the bytes after it) and collect answers."""
    answers = []
    async with connect(session["stream_url"], max_size=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "session" and hello["task"] == "embed"
        for message in messages:
            await ws.send(message)
            if isinstance(message, bytes):
                answers.append(await frame_answer(ws))
    return answers


def test_a_session_streams_the_windows_rest_gives(embed_server: RunningServer) -> None:
    """Every frame gets its frame_done; the frames that complete a window get its result
    first, the same as POST /v1/clips on the same frames; pts come from the headers."""
    frames = panning_frames(15, 120, 160)
    session = create_session(embed_server, keep_ratio=0.5, drop="static")
    messages: list[bytes | str] = []
    for index, frame in enumerate(frames):
        messages += [json.dumps({"type": "frame", "frame_index": index, "pts": index / 10}), png(frame)]
    answers = asyncio.run(stream(session, messages))
    assert [done["frame_index"] for _, done in answers] == list(range(15))
    assert all(done["type"] == "frame_done" for _, done in answers)
    assert [done["sampled"] for _, done in answers] == [i % 2 == 0 for i in range(15)]
    results = [result for result, _ in answers if result is not None]
    assert [r["frame_index"] for r in results] == [6, 10, 14]
    assert [r["window"] for r in results] == [0, 1, 2]
    assert results[1]["pts"] == pytest.approx(0.4) and results[1]["end_pts"] == pytest.approx(1.0)
    rest = post_clip(embed_server, frame_files(frames), fields(keep_ratio=0.5, drop="static")).json()
    for result, segment in zip(results, rest["segments"], strict=True):
        np.testing.assert_allclose(result["embedding"], segment["embedding"], atol=1e-6)
        assert result["labels"] == segment["labels"] and result["tokens"] == 196
    info = httpx.get(f"{embed_server.url}/v1/sessions/{session['id']}").json()
    assert info["windows"] == 3 and info["slices"] == 4 and info["frames_done"] == 15
    assert info["tokens_run"] == 3 * 196 and info["frame_size"] == [120, 160]
    httpx.delete(f"{embed_server.url}/v1/sessions/{session['id']}")


def test_a_bad_frame_is_answered_and_the_window_goes_on(embed_server: RunningServer) -> None:
    """A frame of another size and bytes that are no image each get an error naming the
    frame; the stream goes on, and its window is what the good frames alone give."""
    frames = panning_frames(7, 120, 160)
    session = create_session(embed_server)
    wrong = panning_frames(1, 64, 96)[0]
    messages = [png(frames[0]), png(frames[1]), png(wrong), b"not an image", *map(png, frames[2:])]
    answers = asyncio.run(stream(session, messages))
    errors = [done for _, done in answers if done["type"] == "error"]
    assert [(e["frame_index"], e["code"]) for e in errors] == [(2, "size_mismatch"), (3, "invalid_image")]
    assert "is 96×64, the clip's frames are 160×120" in errors[0]["message"]
    ((result, _),) = [a for a in answers if a[0] is not None]
    assert (result["start_frame"], result["end_frame"]) == (0, 8)  # two frame numbers went to errors
    alone = post_clip(embed_server, frame_files(frames), fields()).json()["segments"][0]
    np.testing.assert_allclose(result["embedding"], alone["embedding"], atol=1e-6)


@pytest.fixture(scope="module")
def batching_server(videomae_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """Batches run once all three sessions' rows are queued; the window bounds the wait, so a
    slow client on a loaded machine still joins its batch (and a batch that cannot fill, a
    window of another token count, waits that long)."""
    settings = embed_settings(
        videomae_checkpoint, engine_repository, max_batch_size=3, max_queue_delay_ms=3_000
    )
    with running_server(settings) as running:
        yield running


def engine_calls(server: RunningServer) -> list[float]:
    return [
        server.metric("vidserve_inference_exec_count_total", model=f"{EMBED_MODEL}.{part}")
        for part in ("embed", "encode")
    ]


def test_sessions_share_calls_when_their_token_counts_match(
    batching_server: RunningServer, offline: Any
) -> None:
    """Three sessions at once: their slices share each embed call; the two windows of 196
    kept tokens (tube and static) share one encode call, the window of 392 runs apart; and
    each session's window is what it gives alone."""
    frames = panning_frames(7, 120, 160)
    settings: list[dict[str, Any]] = [
        {"keep_ratio": 0.5, "drop": "tube"},
        {"keep_ratio": 0.5, "drop": "static"},
        {},
    ]

    async def run() -> list[list[tuple[Any, Any]]]:
        sessions = [await asyncio.to_thread(create_session, batching_server, **s) for s in settings]
        return await asyncio.gather(*(stream(s, [png(f) for f in frames]) for s in sessions))

    before = engine_calls(batching_server)
    answers = asyncio.run(run())
    embeds, encodes = (a - b for a, b in zip(engine_calls(batching_server), before, strict=True))
    assert embeds == 2  # two slices per session, each one call for all three
    assert encodes == 2  # 196 tokens twice together, 392 alone
    for session, extra in zip(answers, settings, strict=True):
        (result,) = [r for r, _ in session if r is not None]
        (alone,) = offline_windows(offline, WindowSpec(4, 2, 4, **extra), frames)
        np.testing.assert_allclose(result["embedding"], alone.embedding, atol=TOLERANCE)


# --- bad input -------------------------------------------------------------------------


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_a_clip_shorter_than_one_window_is_refused(embed_server: RunningServer, tmp_path: Path) -> None:
    frames = panning_frames(6, 120, 160)
    status, code, message = error_of(post_clip(embed_server, frame_files(frames), fields()))
    assert (status, code) == (422, "clip_too_short")
    assert message == "the clip has 6 frames; one window of 4 frames sampled every 2 needs at least 7"
    video = write_video(tmp_path / "short.mp4", frames)
    with video.open("rb") as data:
        response = post_clip(embed_server, {"video": ("short.mp4", data, "video/mp4")}, fields())
    assert error_of(response)[:2] == (422, "clip_too_short")
    with video.open("rb") as data:
        response = httpx.post(
            f"{embed_server.url}/v1/jobs",
            files={"video": ("short.mp4", data, "video/mp4")},
            data={"task": "embed", **fields()},
        )
    assert error_of(response)[:2] == (422, "clip_too_short")


def test_frames_of_mixed_sizes_are_refused(embed_server: RunningServer) -> None:
    frames = [*panning_frames(4, 120, 160), *panning_frames(4, 64, 96)]
    status, code, message = error_of(post_clip(embed_server, frame_files(frames), fields()))
    assert (status, code) == (422, "size_mismatch") and message.startswith("frame 4 is 96×64")


@pytest.mark.parametrize("keep_ratio", ["0", "-0.5", "1.5", "nan"])
def test_keep_ratio_outside_zero_to_one_is_refused(embed_server: RunningServer, keep_ratio: str) -> None:
    frames = panning_frames(7, 120, 160)
    status, code, message = error_of(
        post_clip(embed_server, frame_files(frames), fields(keep_ratio=keep_ratio))
    )
    assert (status, code) == (422, "invalid_request") and "keep_ratio" in message
    body = f'{{"task": "embed", "keep_ratio": {"NaN" if keep_ratio == "nan" else keep_ratio}}}'
    response = httpx.post(
        f"{embed_server.url}/v1/sessions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "keep_ratio" in response.text


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"stride": 6}, "stride must be a positive multiple of 2 × sampling_rate = 4"),
        ({"frames_per_clip": 5}, "frames_per_clip must be even"),
    ],
)
def test_windows_that_cannot_work_are_refused(
    embed_server: RunningServer, extra: dict[str, int], says: str
) -> None:
    frames = panning_frames(7, 120, 160)
    status, code, message = error_of(post_clip(embed_server, frame_files(frames), fields(**extra)))
    assert (status, code) == (422, "invalid_argument") and says in message
    response = httpx.post(f"{embed_server.url}/v1/sessions", json={"task": "embed", **SMALL_WINDOW, **extra})
    assert error_of(response) == (422, "invalid_argument", message)


def test_a_corrupt_video_is_refused(embed_server: RunningServer, tmp_path: Path) -> None:
    video = write_video(tmp_path / "cut.mp4", panning_frames(12, 128, 160))
    data = video.read_bytes()
    for name, payload in (("noise.mp4", bytes(range(256)) * 64), ("cut.mp4", data[: len(data) // 3])):
        response = post_clip(embed_server, {"video": (name, io.BytesIO(payload), "video/mp4")}, fields())
        status, code, message = error_of(response)
        assert (status, code) == (422, "invalid_video"), (name, message)
        assert "/tmp" not in message  # the server's own paths stay its own


def test_video_and_frames_together_or_neither_are_refused(embed_server: RunningServer) -> None:
    response = post_clip(embed_server, None, fields())
    assert error_of(response)[:2] == (422, "invalid_argument")
    both = [*frame_files(panning_frames(7, 120, 160)), ("video", ("a.mp4", b"xx", "video/mp4"))]
    assert error_of(post_clip(embed_server, both, fields()))[:2] == (422, "invalid_argument")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_a_server_on_onnx_runtime_gives_the_same_windows(
    videomae_checkpoint: Path, engine_repository: Path, offline: Any
) -> None:
    """The served path on the ORT engines (exported on first start) as on TorchScript."""
    frames = panning_frames(11, 120, 160)
    settings = embed_settings(videomae_checkpoint, engine_repository, engine="onnx")
    with running_server(settings) as running:
        response = post_clip(running, frame_files(frames), fields(keep_ratio=0.5, drop="static"))
        parts = httpx.get(f"{running.url}/v1/models/{EMBED_MODEL}").json()["engines"]
    assert response.status_code == 200, response.text
    assert {p["backend"] for p in parts} == {"onnx"} and {p["part"] for p in parts} == {"embed", "encode"}
    assert_segments(
        response.json()["segments"], offline_windows(offline, WindowSpec(4, 2, 4, 0.5, "static"), frames)
    )
