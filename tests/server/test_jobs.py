"""Clip jobs (``/v1/jobs``) on a real server: RIFE v4.0 and hashed XMem behind one
scheduler each, jobs at batch priority beside live sessions."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from clients import Client
from models.video import probe, read_frames
from server.app import OWNER_FILE
from server.scheduler import BatchStats, Overloaded, Priority, Scheduler, SchedulerConfig
from server.settings import Settings
from server.tasks.segmentation.masks import encode_index_png
from tests.server.support import RunningServer, decode, panning_frames, png, running_server

FPS = Fraction(12)
SIZE = (48, 64)  # H, W: small, and even for yuv420p
POLL_S = 0.05


def write_video(path: Path, frames: list[np.ndarray], *, audio: bool = False) -> None:
    """frames: uint8 H×W×3 → an H.264 file at ``FPS``, with a sine tone when ``audio``."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"crf": "10"}
        tone = out.add_stream("aac", rate=16000) if audio else None
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        if tone is not None:
            samples = np.sin(np.arange(16000 * len(frames) // 12) * 0.05).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate = 16000
            out.mux(tone.encode(chunk))
            out.mux(tone.encode())


def cut_video(path: Path, *, audio: bool = False) -> list[np.ndarray]:
    """Four frames of a pan, then a hard cut to four frames of another place."""
    height, width = SIZE
    first = panning_frames(4, height, width)
    second = [np.ascontiguousarray(255 - f[::-1]) for f in panning_frames(4, height, width)]
    write_video(path, first + second, audio=audio)
    return first + second


@pytest.fixture(scope="module")
def jobs_server(
    rife_v40_weights: Path,
    hashed_checkpoint: Path,
    engine_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    settings = Settings(
        models=["rife-4.0", "xmem"],
        weights={"rife-4.0": rife_v40_weights, "xmem": hashed_checkpoint},
        model_repository=engine_repository,
        engine="torchscript",
        max_queue_delay_ms=2.0,
        max_jobs=3,
        max_job_frames=120,
        max_job_upload_bytes=2**20,
        job_dir=tmp_path_factory.mktemp("jobs"),
    )
    with running_server(settings) as running:
        yield running


@pytest.fixture(autouse=True)
def no_jobs_left(jobs_server: RunningServer) -> Iterator[None]:
    """Each test starts with no job held, so the job bound is each test's own."""
    yield
    for job in httpx.get(f"{jobs_server.url}/v1/jobs").json()["jobs"]:
        httpx.delete(f"{jobs_server.url}/v1/jobs/{job['id']}")


def submit(server: RunningServer, video: Path, **fields: Any) -> httpx.Response:
    files: dict[str, Any] = {"video": (video.name, video.read_bytes(), "video/mp4")}
    if "mask" in fields:
        files["mask"] = ("mask.png", fields.pop("mask"), "image/png")
    return httpx.post(f"{server.url}/v1/jobs", data={k: str(v) for k, v in fields.items()}, files=files)


def wait_done(server: RunningServer, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(POLL_S)
    raise TimeoutError(f"job {job_id} did not finish")


def decoded(data: bytes, tmp_path: Path, name: str) -> list[np.ndarray]:
    path = tmp_path / name
    path.write_bytes(data)
    return [f.rgb for f in read_frames(path)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def audio_payload(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def test_interpolation_job_doubles_the_frame_rate_without_ghosting(
    jobs_server: RunningServer, tmp_path: Path
) -> None:
    source = tmp_path / "cut.mp4"
    cut_video(source, audio=True)
    response = submit(jobs_server, source, task="interpolate", factor=2)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["progress"]["frames_total"] == 8

    done = wait_done(jobs_server, job["id"])
    assert done["state"] == "done", done["error"]
    assert done["progress"]["frames_done"] == done["progress"]["frames_total"] == 8
    result = httpx.get(f"{jobs_server.url}{done['result_url']}")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    out = tmp_path / "out.mp4"
    out.write_bytes(result.content)
    info, original = probe(out), [f.rgb for f in read_frames(source)]
    frames = [f.rgb for f in read_frames(out)]
    assert info.fps == 2 * FPS and len(frames) == 2 * 8, "N× the frames, the last one held"
    assert psnr(frames[-1], original[-1]) > 35

    # originals sit at even positions; the pair across the cut repeats its earlier frame
    for i, frame in enumerate(original):
        assert psnr(frames[2 * i], frame) > 35, f"original {i}"
    assert psnr(frames[7], original[3]) > 35, "the in-between frame at the cut is not a copy"
    assert psnr(frames[7], original[4]) < 20
    # an in-between frame off the cut is RIFE's, as one REST call gives it
    pair = {"frame0": png(original[1]), "frame1": png(original[2])}
    rest = decode(httpx.post(f"{jobs_server.url}/v1/interpolate", files=pair, timeout=120).content)
    assert psnr(frames[3], rest) > 35
    assert audio_payload(source), "the test clip has no audio to copy"
    assert audio_payload(out) == audio_payload(source), "the audio was not copied unchanged"


def test_segmentation_job_zip_equals_a_live_session(jobs_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    cut_video(source)
    mask = np.zeros(SIZE, np.uint8)
    mask[10:30, 8:28], mask[20:44, 36:60] = 1, 2
    response = submit(jobs_server, source, task="segment", mask=encode_index_png(mask), processing_size=64)
    assert response.status_code == 202, response.text
    done = wait_done(jobs_server, response.json()["id"])
    assert done["state"] == "done", done["error"]
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(f"{jobs_server.url}{done['result_url']}").content))
    document = json.loads(archive.read("masks.json"))
    assert document["video"] == "clip.mp4" and document["objects"] == [1, 2]
    assert [f["index"] for f in document["frames"]] == list(range(8))

    live = live_masks(jobs_server, [f.rgb for f in read_frames(source)], mask)
    for i, expected in enumerate(live):
        record = document["frames"][i]
        got = np.asarray(Image.open(io.BytesIO(archive.read(record["file"]))))
        np.testing.assert_array_equal(got, expected, err_msg=f"frame {i}")
        assert sorted(record["masks"]) == ["1", "2"]
        for object_id, rle in record["masks"].items():
            binary = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            np.testing.assert_array_equal(binary, got == int(object_id))


def live_masks(server: RunningServer, frames: list[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    """The same frames through a live websocket session: what a job must reproduce."""
    with Client(server.url, timeout=120) as client:
        session = client.create_segmentation_session(processing_size=64)
        with session.stream() as stream:
            masks = [r.mask for r in stream.stream(frames, first_mask=mask)]
        session.delete()
    assert all(m is not None for m in masks)
    return [m for m in masks if m is not None]


def test_segmentation_job_overlay_video(jobs_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    frames = cut_video(source)
    mask = np.zeros(SIZE, np.uint8)
    mask[10:30, 8:28] = 1
    response = submit(jobs_server, source, task="segment", mask=encode_index_png(mask), output="video")
    done = wait_done(jobs_server, response.json()["id"])
    assert done["state"] == "done", done["error"]
    result = httpx.get(f"{jobs_server.url}{done['result_url']}")
    assert result.headers["content-type"] == "video/mp4"
    overlaid = decoded(result.content, tmp_path, "overlay.mp4")
    assert len(overlaid) == len(frames)
    first = overlaid[0].astype(int)
    inside, outside = (
        np.abs(first - frames[0])[12:28, 10:26].mean(),
        np.abs(first - frames[0])[35:, 35:].mean(),
    )
    assert inside > 3 * outside + 5, "object 1 is not tinted on the first frame"


def test_cancel_mid_run_frees_the_job_and_spares_the_other(
    jobs_server: RunningServer, tmp_path: Path
) -> None:
    """Two segmentation jobs run side by side on the engine; one is cancelled while running:
    it never reaches the engine again, its files and its reserved memory go at once, and the
    other finishes every frame."""
    scheduler = jobs_server.state.running("xmem").scheduler
    owners: list[list[str]] = []
    observe = scheduler.on_batch

    def record(stats: BatchStats) -> None:
        owners.append(stats.owners)
        if observe is not None:
            observe(stats)

    source, short = tmp_path / "long.mp4", tmp_path / "short.mp4"
    # why 100 frames: still running when the cancel lands, however slow or fast the machine
    write_video(source, panning_frames(100, *SIZE, step=1))
    write_video(short, panning_frames(6, *SIZE, step=1))
    mask = encode_index_png(np.pad(np.ones((20, 20), np.uint8), ((10, 18), (8, 36))))
    scheduler.on_batch = record
    try:
        job = submit(jobs_server, source, task="segment", mask=mask, processing_size=128).json()
        other = submit(jobs_server, short, task="segment", mask=mask, processing_size=128).json()
        both_reserved = jobs_server.metric("vidserve_segmentation_memory_reserved_bytes")
        deadline = time.monotonic() + 120
        while httpx.get(f"{jobs_server.url}/v1/jobs/{job['id']}").json()["progress"]["frames_done"] < 1:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(POLL_S)
        deleted = httpx.delete(f"{jobs_server.url}/v1/jobs/{job['id']}")
        batches_at_cancel = len(owners)
        other_reserved = jobs_server.metric("vidserve_segmentation_memory_reserved_bytes")
        finished = wait_done(jobs_server, other["id"])
    finally:
        scheduler.on_batch = observe
    assert deleted.status_code == 200 and deleted.json()["state"] == "cancelled"
    assert deleted.json()["progress"]["frames_done"] < 100
    assert httpx.get(f"{jobs_server.url}/v1/jobs/{job['id']}").status_code == 404
    assert not (jobs_server.state.jobs.root / job["id"]).exists()
    assert 0 < other_reserved < both_reserved, "the cancelled job's reservation went at once"
    assert any(job["id"] in o for o in owners[:batches_at_cancel])
    assert not any(job["id"] in o for o in owners[batches_at_cancel:]), "the cancelled job ran on"
    assert any(other["id"] in o for o in owners)
    assert finished["state"] == "done" and finished["progress"]["frames_done"] == 6, finished["error"]
    httpx.delete(f"{jobs_server.url}/v1/jobs/{other['id']}")
    assert jobs_server.metric("vidserve_segmentation_memory_reserved_bytes") == 0


def test_a_mask_frame_past_the_end_fails_the_job(jobs_server: RunningServer, tmp_path: Path) -> None:
    """Matroska declares no frame count, so the check waits for decoding; the job fails
    naming the problem instead of finishing with empty masks."""
    source = tmp_path / "clip.mkv"
    write_video(source, panning_frames(4, *SIZE))
    mask = encode_index_png(np.pad(np.ones((8, 8), np.uint8), ((0, 40), (0, 56))))
    response = submit(jobs_server, source, task="segment", mask=mask, mask_frame=9)
    assert response.status_code == 202, response.text
    done = wait_done(jobs_server, response.json()["id"])
    assert done["state"] == "failed" and "mask_frame 9 is past the video's 4 frames" in done["error"]
    assert httpx.get(f"{jobs_server.url}{done['url']}/result").status_code == 409


def test_bad_jobs_get_clear_errors(jobs_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    write_video(source, panning_frames(4, *SIZE))
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"these are not frames" * 10)
    good_mask = np.zeros(SIZE, np.uint8)
    good_mask[4:10, 4:10] = 1
    good, empty, cropped = (encode_index_png(m) for m in (good_mask, good_mask * 0, good_mask[:20]))
    cases: list[tuple[httpx.Response, int, str]] = [
        (submit(jobs_server, not_video, task="interpolate"), 422, "invalid_video"),
        (submit(jobs_server, source, task="segment"), 422, "invalid_request"),
        (submit(jobs_server, source, task="segment", mask=empty), 422, "empty_mask"),
        (submit(jobs_server, source, task="segment", mask=cropped), 422, "mask_size_mismatch"),
        (submit(jobs_server, source, task="segment", mask=b"not a png"), 400, "invalid_mask"),
        (submit(jobs_server, source, task="segment", mask=good, mask_frame=9), 422, "invalid_argument"),
        (submit(jobs_server, source, task="interpolate", scale=0.3), 422, "invalid_argument"),
        (submit(jobs_server, source, task="interpolate", factor=1), 422, "invalid_request"),
        (submit(jobs_server, source, task="dance"), 422, "invalid_request"),
        (submit(jobs_server, source, task="interpolate", model="rife-4.6"), 404, "unknown_model"),
        (httpx.get(f"{jobs_server.url}/v1/jobs/job_nope"), 404, "unknown_job"),
        (httpx.delete(f"{jobs_server.url}/v1/jobs/job_nope"), 404, "unknown_job"),
    ]
    too_long = tmp_path / "long.mp4"
    write_video(too_long, panning_frames(121, *SIZE, step=1))
    cases.append((submit(jobs_server, too_long, task="interpolate"), 413, "too_many_frames"))
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (2**20 + 10))
    cases.append((submit(jobs_server, big, task="interpolate"), 413, "payload_too_large"))
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code, response.text
    left = [p.name for p in jobs_server.state.jobs.root.iterdir() if p.name != OWNER_FILE]
    assert not left, f"a refused job left files behind: {left}"


def test_job_count_is_bounded_and_results_wait_for_done(jobs_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    write_video(source, panning_frames(12, *SIZE, step=1))
    accepted = [submit(jobs_server, source, task="interpolate", factor=4) for _ in range(3)]
    assert [r.status_code for r in accepted] == [202] * 3
    refused = submit(jobs_server, source, task="interpolate")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_jobs"
    early = httpx.get(f"{jobs_server.url}/v1/jobs/{accepted[-1].json()['id']}/result")
    assert early.status_code == 409 and early.json()["error"]["code"] in ("job_queued", "job_running")
    listed = httpx.get(f"{jobs_server.url}/v1/jobs").json()["jobs"]
    assert {j["id"] for j in listed} == {r.json()["id"] for r in accepted}
    for response in accepted:
        assert wait_done(jobs_server, response.json()["id"])["state"] == "done"
        httpx.delete(f"{jobs_server.url}/v1/jobs/{response.json()['id']}")
    assert httpx.get(f"{jobs_server.url}/v1/jobs").json()["jobs"] == []


def test_live_work_is_scheduled_before_job_rows() -> None:
    """The policy itself: with both queued, the live rows form the batch, and job rows never
    join it; job rows run once no live row waits."""

    class Unused:
        def execute(self, payloads: Any) -> Any:
            raise AssertionError("schedule() alone never runs the engine")

    async def run() -> list[list[str]]:
        scheduler: Scheduler[str, str] = Scheduler("policy", Unused(), SchedulerConfig(4, 0.0, 8))
        scheduler.submit("job", "k", ["j1", "j2"], Priority.BATCH)
        scheduler.submit("live-a", "k", ["a1"])
        scheduler.submit("live-b", "k", ["b1"])
        batches = []
        while (batch := scheduler.schedule()) is not None:
            batches.append([r.payload for r in batch.requests])
        return batches

    assert asyncio.run(run()) == [["a1", "b1"], ["j1", "j2"]]


def test_job_rows_never_make_live_frames_wait_for_queue_space() -> None:
    class Unused:
        def execute(self, payloads: Any) -> Any:
            raise AssertionError("never run")

    async def run() -> None:
        scheduler: Scheduler[str, str] = Scheduler("bounds", Unused(), SchedulerConfig(4, 0.0, 2))
        scheduler.submit("job", "k", ["j1", "j2"], Priority.BATCH)
        scheduler.submit("live", "k", ["a1", "a2"])  # the job rows do not count against it
        assert scheduler.queue_depth == 4
        with pytest.raises(Overloaded):
            scheduler.submit("job", "k", ["j3"], Priority.BATCH)

    asyncio.run(run())


def test_a_live_stream_beside_a_running_job(jobs_server: RunningServer, tmp_path: Path) -> None:
    """The real engine with a job running: every live frame is answered, never with 429, and
    no engine call mixes live rows with job rows."""
    scheduler = jobs_server.state.running("rife-4.0").scheduler
    owners: list[list[str]] = []
    observe = scheduler.on_batch

    def record(stats: BatchStats) -> None:
        owners.append(stats.owners)
        if observe is not None:
            observe(stats)

    scheduler.on_batch = record
    try:
        source = tmp_path / "long.mp4"
        # why 120 frames (the bound): the job must still be running while the stream runs
        write_video(source, panning_frames(120, *SIZE, step=1))
        job = submit(jobs_server, source, task="interpolate", factor=2).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{jobs_server.url}/v1/jobs/{job['id']}").json()["progress"]["frames_done"] < 2:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(POLL_S)
        with Client(jobs_server.url, max_retries=0) as client:
            session = client.create_interpolation_session(factor=2)
            with session.stream() as stream:
                results = list(stream.stream(panning_frames(6, *SIZE, step=2)))
            session.delete()
        job_running = httpx.get(f"{jobs_server.url}/v1/jobs/{job['id']}").json()["state"]
        httpx.delete(f"{jobs_server.url}/v1/jobs/{job['id']}")
    finally:
        scheduler.on_batch = observe
    assert [len(r.frames) for r in results] == [0, 1, 1, 1, 1, 1]
    is_live = [any(not owner.startswith("job_") for owner in o) for o in owners]
    live = [o for o, flag in zip(owners, is_live, strict=True) if flag]
    assert len(live) == 5, "one engine call per live pair (the client sends one frame at a time)"
    assert all(not owner.startswith("job_") for o in live for owner in o), "a batch mixed live and job rows"
    first, last = is_live.index(True), len(is_live) - 1 - is_live[::-1].index(True)
    assert job_running == "running" and not all(is_live[first : last + 1]), "the job ran beside the stream"
