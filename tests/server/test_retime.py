"""Retiming on the server: a frame header's own timesteps on a live stream (run in parts when
they exceed the output bound), and clip jobs with ``fps``, ``dedup``, trims and warnings, on
real files (tests/data/videos)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from clients import Client, FrameRejected
from models.video import probe, read_frames
from tests.models.test_video import close
from tests.models.test_video_sources import BFRAMES, H264_AAC, VFR, cut_copy
from tests.server.support import RunningServer, decode, panning_frames, png, running_server, server_settings
from tests.server.test_jobs import submit, wait_done
from tests.server.test_stream import create, receive_frame_answer


@pytest.fixture(scope="module")
def retime_server(
    rife_v40_weights: Path, engine_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """An engine queue of two rows: pairs of more in-betweens run in parts of two."""
    settings = server_settings(
        rife_v40_weights,
        engine_repository,
        max_queue_size=2,
        max_job_frames=200,
        job_dir=tmp_path_factory.mktemp("jobs"),
    )
    with running_server(settings) as running:
        yield running


def rest_between(server: RunningServer, frame0: np.ndarray, frame1: np.ndarray, t: float) -> np.ndarray:
    files = {"frame0": png(frame0), "frame1": png(frame1)}
    answer = httpx.post(f"{server.url}/v1/interpolate", files=files, data={"timesteps": str(t)}, timeout=60)
    assert answer.status_code == 200, answer.text
    return decode(answer.content)


def test_a_frame_header_brings_its_own_timesteps(retime_server: RunningServer) -> None:
    """Three in-betweens are more than the queue holds at once, so the pair runs in two parts;
    each frame is what a REST call for its timestep gives. [] gives none; the pair after it
    starts from that frame."""
    a, b, c, d = panning_frames(4, step=4)
    with Client(retime_server.url) as client:
        session = client.create_interpolation_session(factor=2)
        with session.stream() as stream:
            assert stream.send(a, timesteps=[0.5]).frames == []  # the first frame: no pair
            result = stream.send(b, timesteps=[0.25, 0.5, 0.75])
            assert [f.timestep for f in result.frames] == [0.25, 0.5, 0.75]
            for got in result.frames:
                assert close(got.frame, rest_between(retime_server, a, b, got.timestep), tolerance=0.5)
            assert stream.send(c, timesteps=[]).frames == []
            after = stream.send(d)  # the session's own timesteps again, from c
            assert [f.timestep for f in after.frames] == [0.5]
            assert close(after.frames[0].frame, rest_between(retime_server, c, d, 0.5), tolerance=0.5)
            with pytest.raises(FrameRejected, match="increase"):
                stream.send(a, timesteps=[0.5, 0.25])
            with pytest.raises(FrameRejected, match="between 0 and 1"):
                stream.send(a, timesteps=[1.0])
        assert session.info()["outputs"] == 4


def test_parts_run_in_pieces_are_numbered_as_one(retime_server: RunningServer) -> None:
    """The result headers of a pair run in two parts still count 0, 1, 2 of 3."""
    frames = panning_frames(2)
    session = create(retime_server, factor=2)

    async def exchange() -> list[tuple[dict[str, Any], bytes]]:
        async with connect(session["stream_url"]) as ws:
            await ws.recv()  # the session message
            await ws.send(png(frames[0]))
            await receive_frame_answer(ws)
            await ws.send(json.dumps({"type": "frame", "timesteps": [0.25, 0.5, 0.75]}))
            await ws.send(png(frames[1]))
            results, done = await receive_frame_answer(ws)
            assert done["results"] == 3
            return results

    results = asyncio.run(exchange())
    assert [(h["part"], h["parts"], h["timestep"]) for h, _ in results] == [
        (0, 3, 0.25),
        (1, 3, 0.5),
        (2, 3, 0.75),
    ]


def fetch(server: RunningServer, job: dict[str, Any], path: Path) -> Path:
    answer = httpx.get(f"{server.url}{job['result_url']}", timeout=60)
    assert answer.status_code == 200
    path.write_bytes(answer.content)
    return path


def test_a_job_at_a_target_rate_from_a_variable_rate_source(
    retime_server: RunningServer, tmp_path: Path
) -> None:
    """fps 30 over 0.5-2.5 s: gaps of up to 0.73 s need 21 in-betweens in one pair, far more
    than the queue's two rows, and the result is constant-rate at k/30."""
    answer = submit(retime_server, VFR, task="interpolate", fps="30", start="0.5", end="2.5")
    assert answer.status_code == 202, answer.text
    job = wait_done(retime_server, answer.json()["id"], timeout=300)
    assert job["state"] == "done", job
    assert job["warnings"] == [] and job["progress"]["frames_total"] == job["progress"]["frames_done"]
    out = fetch(retime_server, job, tmp_path / "out.mp4")
    assert probe(out).fps == 30
    times = [f.time_s for f in read_frames(out)]
    assert times == pytest.approx([k / 30 for k in range(60)], abs=2e-4)


def test_a_job_on_a_b_frame_source_has_even_gaps(retime_server: RunningServer, tmp_path: Path) -> None:
    answer = submit(retime_server, BFRAMES, task="interpolate", factor="2", end="0.3")
    job = wait_done(retime_server, answer.json()["id"], timeout=300)
    assert job["state"] == "done", job
    times = [f.time_s for f in read_frames(fetch(retime_server, job, tmp_path / "out.mp4"))]
    assert len(times) == 2 * job["progress"]["frames_total"]
    assert np.diff(times) == pytest.approx(np.full(len(times) - 1, 125 / 2997 / 2), abs=2e-4)


def test_a_job_on_a_cut_file_warns(retime_server: RunningServer, tmp_path: Path) -> None:
    cut = cut_copy(H264_AAC, tmp_path, 0.5)
    job = wait_done(retime_server, submit(retime_server, cut, task="interpolate").json()["id"], timeout=300)
    decoded = len(list(read_frames(cut)))
    assert job["state"] == "done" and job["error"] is None
    assert len(job["warnings"]) == 1
    assert job["warnings"][0].startswith(f"cut.mp4: decoded {decoded} frames of the 40 it announces")
    assert str(tmp_path) not in job["warnings"][0] and "source" not in job["warnings"][0]
    assert job["progress"]["frames_total"] == decoded


def test_a_job_drops_repeats(retime_server: RunningServer, tmp_path: Path) -> None:
    from tests.models.test_video import make_video

    pictures = panning_frames(4)
    video = tmp_path / "twos.mp4"
    make_video(video, [p for p in pictures for _ in range(2)], fps=24, audio=False)
    job = wait_done(
        retime_server, submit(retime_server, video, task="interpolate", dedup="true").json()["id"]
    )
    assert job["state"] == "done", job
    assert job["progress"]["frames_dropped"] == 4 and job["progress"]["frames_done"] == 8
    out = fetch(retime_server, job, tmp_path / "out.mp4")
    frames = list(read_frames(out))
    assert len(frames) == 16 and np.diff([f.time_s for f in frames]) == pytest.approx(
        np.full(15, 1 / 48), abs=2e-4
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"fps": "fast"}, "not a frame rate"), ({"fps": "5000"}, "at most 1000"),
     ({"start": "2", "end": "1"}, "after start")],
)  # fmt: skip
def test_bad_retiming_fields(retime_server: RunningServer, fields: dict[str, str], message: str) -> None:
    answer = submit(retime_server, VFR, task="interpolate", **fields)
    assert answer.status_code == 422 and message in answer.json()["error"]["message"], answer.text


def test_a_png_named_mp4_is_refused_as_the_cli_refuses_it(
    retime_server: RunningServer, tmp_path: Path
) -> None:
    fake = tmp_path / "clip.mp4"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(fake, format="PNG")
    answer = submit(retime_server, fake, task="interpolate")
    assert answer.status_code == 422
    said = answer.json()["error"]["message"]
    assert said == "clip.mp4: is a PNG image, not a video (whatever its file name says)"
