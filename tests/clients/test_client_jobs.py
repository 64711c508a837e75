"""The Python client's clip jobs against a real server (RIFE v4.0 and hashed XMem)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clients import AsyncClient, Client, InvalidRequest, Job, NotFound
from models.video import probe
from tests.server.support import RunningServer, panning_frames
from tests.server.test_jobs import FPS, SIZE, cut_video, jobs_server, no_jobs_left, write_video

__all__ = ["jobs_server", "no_jobs_left"]  # fixtures, imported for pytest to find


def test_interpolation_job_from_submit_to_download(jobs_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "cut.mp4"
    cut_video(source, audio=True)
    seen: list[Job] = []
    with Client(jobs_server.url) as client:
        job = client.submit_job(source, "interpolate", factor=2, scene_change_threshold="none")
        assert job.state in ("queued", "running") and job.frames_total == 8
        assert job.id in {j.id for j in client.jobs()}
        done = client.wait_job(job.id, poll_s=0.05, timeout=120, on_progress=seen.append)
        assert done.state == "done" and done.frames_done == 8 and done.result_url
        out = client.download_job(job.id, tmp_path / "smooth.mp4")
        info = probe(out)
        assert info.fps == 2 * FPS and info.has_audio and info.frames == 16
        assert not list(tmp_path.glob(".*partial")), "the download left a partial file"
        assert client.cancel_job(job.id).state == "done"  # deleting a finished job forgets it
        with pytest.raises(NotFound):
            client.job(job.id)
    assert seen and all(a.frames_done <= b.frames_done for a, b in itertools.pairwise(seen))


def test_segmentation_job_with_the_async_client(jobs_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    write_video(source, panning_frames(6, *SIZE))
    mask = np.zeros(SIZE, np.uint8)
    mask[10:30, 8:28] = 3

    async def run() -> Path:
        async with AsyncClient(jobs_server.url) as client:
            job = await client.submit_job(source.read_bytes(), "segment", mask=mask)
            await client.wait_job(job.id, poll_s=0.05, timeout=120)
            return await client.download_job(job.id, tmp_path / "masks.zip")

    archive = zipfile.ZipFile(asyncio.run(run()))
    document = json.loads(archive.read("masks.json"))
    assert document["objects"] == [3] and len(document["frames"]) == 6
    assert sorted(n for n in archive.namelist() if n.endswith(".png")) == [f"{i:05d}.png" for i in range(6)]
    first = np.asarray(Image.open(io.BytesIO(archive.read("00000.png"))))
    np.testing.assert_array_equal(first, mask)  # the given frame's mask comes back as given


def test_job_errors_are_typed(jobs_server: RunningServer, tmp_path: Path) -> None:
    not_video = tmp_path / "notes.txt"
    not_video.write_text("no frames here")
    with Client(jobs_server.url) as client:
        with pytest.raises(InvalidRequest) as bad:
            client.submit_job(not_video, "interpolate")
        assert bad.value.code == "invalid_video" and bad.value.status == 422
        with pytest.raises(NotFound):
            client.download_job("job_unknown", tmp_path / "nothing.mp4")
        assert not (tmp_path / "nothing.mp4").exists()
