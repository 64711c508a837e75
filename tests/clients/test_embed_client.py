"""The Python client and ``python -m clients embed`` against a real clip encoder server
(vit-s on the conformance recipe's hashed weights, TorchScript on CPU) with small windows:
``POST /v1/clips`` from frames and from a video, the sync and async streams, clip jobs, the
command line, and one user error on each path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clients import (
    AsyncClient,
    Client,
    ClipEmbedding,
    ClipSegment,
    EmbedFrameResult,
    FrameRejected,
    InvalidRequest,
    NotFound,
)
from models.video import VideoWriter
from tests.clients.test_cli import cli
from tests.embed_support import EMBED_MODEL, SMALL_WINDOW, embed_settings
from tests.server.support import RunningServer, eventually, panning_frames, png, running_server

FRAMES = 11  # SMALL_WINDOW windows of 7 frames every 4: frames 0–6 and 4–10
FPS = 25
WIDTH = 384  # vit-s's embedding width
TOLERANCE = 1e-5  # the same frames through differently batched engine calls


@pytest.fixture(scope="module")
def embed_server(videomae_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    with running_server(embed_settings(videomae_checkpoint, engine_repository)) as running:
        yield running


@pytest.fixture()
def client(embed_server: RunningServer) -> Iterator[Client]:
    with Client(embed_server.url, timeout=120, backoff=0.05) as client:
        yield client


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return panning_frames(FRAMES)  # uint8 64×96×3 each


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> Path:
    return write_mp4(tmp_path_factory.mktemp("embed") / "pan.mp4", frames)


@pytest.fixture(scope="module")
def rest_answer(embed_server: RunningServer, frames: list[np.ndarray]) -> dict[str, Any]:
    """``POST /v1/clips`` of ``frames`` with plain httpx: what the client must reproduce."""
    files = [("frames", (f"{i}.png", png(f), "image/png")) for i, f in enumerate(frames)]
    form = {k: str(v) for k, v in SMALL_WINDOW.items()}
    response = httpx.post(f"{embed_server.url}/v1/clips", files=files, data=form, timeout=120)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def write_mp4(path: Path, frames: list[np.ndarray]) -> Path:
    height, width = frames[0].shape[:2]
    with VideoWriter(path, width=width, height=height, fps=Fraction(FPS)) as writer:
        for index, frame in enumerate(frames):
            writer.write(frame, index / FPS)
    return path


def expected_windows(frames: int) -> list[tuple[int, int]]:
    """(start_frame, end_frame) of each SMALL_WINDOW window of a clip of ``frames`` frames."""
    span = (SMALL_WINDOW["frames_per_clip"] - 1) * SMALL_WINDOW["sampling_rate"] + 1
    return [(start, start + span - 1) for start in range(0, frames - span + 1, SMALL_WINDOW["stride"])]


def assert_well_formed(segment: ClipSegment, top_k: int = 5) -> None:
    assert segment.embedding.dtype == np.float32 and segment.embedding.shape == (WIDTH,)
    assert np.isfinite(segment.embedding).all()
    assert len(segment.labels) == top_k and segment.top_label == segment.labels[0]
    scores = [label.score for label in segment.labels]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] < 1


def assert_clip(answer: ClipEmbedding, frames: int) -> None:
    """One well-formed segment per window the settings imply, and their mean."""
    assert answer.model == EMBED_MODEL and answer.frames == frames
    assert (answer.frames_per_clip, answer.sampling_rate, answer.stride) == (4, 2, 4)
    assert [(s.start_frame, s.end_frame) for s in answer.segments] == expected_windows(frames)
    assert [s.window for s in answer.segments] == list(range(len(answer.segments)))
    for segment in answer.segments:
        assert_well_formed(segment)
    mean = np.mean([s.embedding for s in answer.segments], axis=0)
    np.testing.assert_allclose(answer.embedding, mean, atol=TOLERANCE)


def assert_same_embeddings(got: list[ClipSegment], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for segment, expected in zip(got, want, strict=True):
        assert (segment.start_frame, segment.end_frame) == (expected["start_frame"], expected["end_frame"])
        np.testing.assert_allclose(segment.embedding, expected["embedding"], atol=TOLERANCE)
        assert segment.top_label is not None and segment.top_label.index == expected["labels"][0]["index"]


# --- POST /v1/clips ---------------------------------------------------------------------------


def test_embed_clip_of_frames_matches_the_rest_endpoint(
    client: Client, frames: list[np.ndarray], rest_answer: dict[str, Any]
) -> None:
    answer = client.embed_clip(frames=frames, **SMALL_WINDOW)
    assert_clip(answer, FRAMES)
    assert_same_embeddings(answer.segments, rest_answer["segments"])
    assert all(s.pts is None and s.tokens == s.tokens_total for s in answer.segments)
    assert answer.raw["segments"][0]["window"] == 0


def test_embed_clip_of_a_video(embed_server: RunningServer, client: Client, video: Path) -> None:
    answer = client.embed_clip(video, **SMALL_WINDOW)
    assert_clip(answer, FRAMES)
    for segment in answer.segments:  # a video's frames carry their times
        assert segment.pts == pytest.approx(segment.start_frame / FPS, abs=1e-3)
        assert segment.end_pts == pytest.approx(segment.end_frame / FPS, abs=1e-3)

    async def halved() -> ClipEmbedding:
        async with AsyncClient(embed_server.url, timeout=120) as aio:
            options = {**SMALL_WINDOW, "keep_ratio": 0.5, "drop": "static", "top_k": 2}
            return await aio.embed_clip(video.read_bytes(), **options)

    half = asyncio.run(halved())
    assert (half.keep_ratio, half.drop, len(half.segments)) == (0.5, "static", len(answer.segments))
    for segment in half.segments:
        assert_well_formed(segment, top_k=2)
        assert segment.tokens == segment.tokens_total // 2


def test_embed_clip_errors(client: Client, frames: list[np.ndarray]) -> None:
    with pytest.raises(InvalidRequest) as short:
        client.embed_clip(frames=frames[:5], **SMALL_WINDOW)
    assert short.value.status == 422 and short.value.code == "clip_too_short"
    assert "5 frames" in short.value.message and "at least 7" in short.value.message
    with pytest.raises(ValueError, match="one of the two"):
        client.embed_clip()


# --- streams ----------------------------------------------------------------------------------


def test_stream_gives_the_rest_windows(
    client: Client, frames: list[np.ndarray], rest_answer: dict[str, Any]
) -> None:
    session = client.create_embed_session(**SMALL_WINDOW)
    try:
        with session.stream() as stream:
            assert stream.info["type"] == "session" and stream.info["window_frames"] == 7
            answers = list(stream.stream(frames))
        assert [a.frame_index for a in answers] == list(range(FRAMES))
        assert [a.sampled for a in answers] == [i % 2 == 0 for i in range(FRAMES)]
        ends = [end for _, end in expected_windows(FRAMES)]
        assert [a.frame_index for a in answers if a.segment is not None] == ends
        segments = [a.segment for a in answers if a.segment is not None]
        for segment in segments:
            assert_well_formed(segment)
        assert_same_embeddings(segments, rest_answer["segments"])
        assert session.info()["windows"] == len(ends)
    finally:
        session.delete()


def test_async_stream_with_indices_and_pts(embed_server: RunningServer, frames: list[np.ndarray]) -> None:
    """Indices and times given by the client name the window; a frame of another size is
    refused and the stream goes on."""

    async def run() -> tuple[list[EmbedFrameResult], FrameRejected, EmbedFrameResult]:
        async with AsyncClient(embed_server.url, timeout=120) as aio:
            session = await aio.create_embed_session(**SMALL_WINDOW)
            try:
                async with session.stream() as stream:
                    answers = [
                        await stream.send(f, frame_index=100 + i, pts=i / FPS)
                        for i, f in enumerate(frames[:7])
                    ]
                    with pytest.raises(FrameRejected) as refused:
                        await stream.send(panning_frames(1, height=32, width=48)[0])
                    after = await stream.send(frames[7])
                    return answers, refused.value, after
            finally:
                await session.delete()

    answers, refused, after = asyncio.run(run())
    assert [a.segment is not None for a in answers] == [False] * 6 + [True]
    window = answers[-1].segment
    assert window is not None and (window.start_frame, window.end_frame) == (100, 106)
    assert window.pts == pytest.approx(0.0) and window.end_pts == pytest.approx(6 / FPS)
    assert refused.code == "size_mismatch" and refused.frame_index == 107
    assert after.frame_index == 108 and after.segment is None and not after.sampled


def test_overloaded_stream_reconnects_and_resends(
    videomae_checkpoint: Path, engine_repository: Path, frames: list[np.ndarray]
) -> None:
    """A one-row engine queue held for 1 s: one session's pair waits in it, so the other's is
    answered ``overloaded`` and closed with 1013; the client reconnects and resends it."""
    settings = embed_settings(
        videomae_checkpoint, engine_repository, max_queue_size=1, max_queue_delay_ms=1000
    )
    options: dict[str, Any] = {"frames_per_clip": 2, "sampling_rate": 1}  # why: frame 1 ends a window

    async def run(running: RunningServer) -> list[EmbedFrameResult]:
        async with AsyncClient(running.url, timeout=120, backoff=0.2, max_retries=5) as aio:
            first = await aio.create_embed_session(**options)
            second = await aio.create_embed_session(**options)
            async with first.stream() as a, second.stream() as b:
                await a.send(frames[0])
                await b.send(frames[0])
                held = asyncio.ensure_future(a.send(frames[1]))

                async def is_queued() -> bool:
                    pending = await asyncio.to_thread(
                        running.metric, "vidserve_pending_request_count", model=EMBED_MODEL
                    )
                    return pending >= 1

                await eventually(is_queued, "the first pair waiting in the queue")
                resent = await b.send(frames[1])
                return [await held, resent]

    with running_server(settings) as running:
        results = asyncio.run(run(running))
        overloaded = running.metric("vidserve_frames_total", task="embed", outcome="overloaded")
    assert overloaded >= 1, "no frame was overloaded: the test did not exercise the resend"
    held, resent = results
    assert held.segment is not None and resent.segment is not None
    np.testing.assert_allclose(held.segment.embedding, resent.segment.embedding, atol=TOLERANCE)
    # the overloaded frame gave its index back, so its resend is frame 1 too
    assert (held.frame_index, resent.frame_index) == (1, 1)


def test_stream_refuses_settings_that_cannot_work(client: Client) -> None:
    with pytest.raises(InvalidRequest) as bad:
        client.create_embed_session(frames_per_clip=4, sampling_rate=2, stride=3)
    assert bad.value.status == 422 and "stride" in bad.value.message


# --- clip jobs --------------------------------------------------------------------------------


def test_embed_job_gives_the_clip_answer(client: Client, video: Path, tmp_path: Path) -> None:
    job = client.submit_job(video, "embed", **SMALL_WINDOW)
    assert job.task == "embed" and job.state in ("queued", "running", "done")
    done = client.wait_job(job.id, poll_s=0.05, timeout=120)
    assert done.frames_done == FRAMES and done.result_url
    answer = client.embed_job_result(job.id)
    assert_clip(answer, FRAMES)
    assert answer.raw == client.job_result_json(job.id)
    assert_same_embeddings(answer.segments, client.embed_clip(video, **SMALL_WINDOW).raw["segments"])
    client.cancel_job(job.id)  # forgets the finished job
    with pytest.raises(NotFound):
        client.job(job.id)

    short = write_mp4(tmp_path / "short.mp4", panning_frames(5))
    with pytest.raises(InvalidRequest) as refused:
        client.submit_job(short, "embed", **SMALL_WINDOW)
    assert refused.value.status == 422 and refused.value.code == "clip_too_short"


# --- python -m clients embed ------------------------------------------------------------------


def test_cli_writes_the_segments(embed_server: RunningServer, client: Client, video: Path) -> None:
    window = ["--frames-per-clip", "4", "--sampling-rate", "2", "--stride", "4", "--top-k", "3"]
    done = cli("embed", video, *window, server=embed_server.url)
    assert done.returncode == 0, done.stderr
    assert "embed" in done.stderr and "frame" in done.stderr  # the progress bar

    written = json.loads(video.with_suffix(".embed.json").read_text())
    assert written["video"] == video.name and written["model"] == EMBED_MODEL
    assert [(s["start_frame"], s["end_frame"]) for s in written["segments"]] == expected_windows(FRAMES)
    assert all(len(s["embedding"]) == WIDTH and len(s["labels"]) == 3 for s in written["segments"])
    direct = client.embed_clip(video, **SMALL_WINDOW)
    assert_same_embeddings(direct.segments, written["segments"])

    lines = done.stdout.splitlines()
    assert len(lines) == len(written["segments"])
    for line, segment in zip(lines, written["segments"], strict=True):
        top = segment["labels"][0]["label"]
        assert (
            line.startswith(f"window {segment['window']}: frames {segment['start_frame']}-") and top in line
        )
    assert not list(video.parent.glob(".*partial"))
    assert client.jobs() == []  # the CLI forgot its job once it had the result


def test_cli_errors(embed_server: RunningServer, tmp_path: Path) -> None:
    short = write_mp4(tmp_path / "short.mp4", panning_frames(5))
    window = ["--frames-per-clip", "4", "--sampling-rate", "2"]
    cases: list[tuple[list[str | Path], str]] = [
        (["embed", short, *window], "clip_too_short"),
        (["embed", short, "--stride", "3", *window], "stride"),
        (["embed", tmp_path / "missing.mp4"], "no such file"),
        (["embed", short, "--out", tmp_path / "out.txt"], "ending in .json"),
    ]
    for argv, expected in cases:
        done = cli(*argv, server=embed_server.url)
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        message = done.stderr.strip()
        assert expected in message and message.startswith("error: "), (argv, message)
        assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert list(tmp_path.iterdir()) == [short], "a failed run left output behind"
