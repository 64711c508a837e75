"""Segmentation sessions over a real server and real websockets: the recorded XMem stream
``seq_a`` end to end, three sessions batched into one call of each engine, memory
accounted and freed, and every bad-input case."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.xmem.config import XMemConfig
from models.xmem.export import eager_engines
from models.xmem.inference_core import InferenceCore
from server.settings import Settings
from server.tasks.segmentation.masks import encode_index_png
from tests.conftest import REPO_ROOT
from tests.models.xmem_support import hashed_xmem
from tests.server.support import RunningServer, png, running_server

SEQ = "seq_a"
TIE = 1e-3  # why: the issue accepts either answer where the expected top two are this close


def xmem_settings(checkpoint: Path, repository: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "models": ["xmem"],
        "weights": {"xmem": checkpoint},
        "model_repository": repository,
        "engine": "torchscript",
        "max_queue_delay_ms": 2.0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def xmem_server(hashed_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    with running_server(xmem_settings(hashed_checkpoint, engine_repository)) as running:
        yield running


def session_body(xmem_spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    config = xmem_spec["config"]
    keys = ("mem_every", "top_k", "min_mid_term_frames", "max_mid_term_frames", "num_prototypes")
    return {
        "task": "segment",
        "processing_size": None,
        **{k: config[k] for k in keys},
        "max_long_term_elements": config["max_long_term_elements"],
        **extra,
    }


def create(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def png_mask(mask: np.ndarray) -> dict[str, str]:
    return {"format": "png", "data": base64.b64encode(encode_index_png(mask)).decode()}


def index_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def assert_argmax(got: np.ndarray, prob: np.ndarray, ids: list[int], what: str) -> None:
    """got equals the argmax of prob, except where its top two are within TIE."""
    labels = np.array([0, *ids], np.uint8)
    want = labels[prob.argmax(0)]
    top2 = np.sort(prob, axis=0)[-2:]
    tied = (top2[1] - top2[0]) <= TIE
    wrong = (got != want) & ~tied
    assert not wrong.any(), f"{what}: {int(wrong.sum())} pixels differ"


async def recv_result(ws: Any) -> tuple[dict[str, Any], list[bytes]]:
    message = json.loads(await asyncio.wait_for(ws.recv(), 120))
    if message["type"] != "result":
        return message, []
    return message, [await asyncio.wait_for(ws.recv(), 120) for _ in message["bytes"]]


def test_seq_a_end_to_end(xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]) -> None:
    """The mask on frame 0, object 3 added on frame 6 (the others left as predicted): every
    returned index mask is the argmax of the reference's probabilities."""
    info = xmem_spec["sequences"][SEQ]
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"], xmem_vectors[f"{SEQ}/masks_u8"]
    session = create(xmem_server, session_body(xmem_spec))

    async def run() -> list[tuple[dict[str, Any], list[bytes]]]:
        answers = []
        async with connect(session["stream_url"], max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session"
            for t in range(info["frames"]):
                prompt = info["prompts"].get(str(t))
                if prompt:
                    header = {"type": "frame", "mask": png_mask(masks[t]), "objects": prompt}
                    await ws.send(json.dumps(header))
                await ws.send(png(frames[t]))
                answers.append(await recv_result(ws))
        return answers

    answers = asyncio.run(run())
    for t, (message, binaries) in enumerate(answers):
        assert message["type"] == "result" and message["frame_index"] == t, message
        expected = xmem_vectors[f"{SEQ}/prob_{t:03d}"]
        assert_argmax(index_of(binaries[0]), expected, message["tracked"], f"frame {t}")
        assert message["tracked"] == ([1, 2] if t < 6 else [1, 2, 3])
    state = httpx.get(f"{xmem_server.url}/v1/sessions/{session['id']}").json()
    assert state["frames_processed"] == info["frames"] and state["objects"] == [1, 2, 3]
    assert state["memory"]["elements"] == {
        "working": info["final_work_mem_elements"],
        "long_term": info["final_long_mem_elements"],
    }
    assert state["memory"]["bytes"]["working"] > 0 and state["memory"]["bytes"]["sensory"] > 0


@pytest.fixture(scope="module")
def batching_server(hashed_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """Batches of the three sessions' frames run as soon as all three are queued; the long
    window only bounds the wait, so a slow client on a loaded machine still joins its batch."""
    settings = xmem_settings(
        hashed_checkpoint, engine_repository, max_batch_size=3, max_queue_delay_ms=10_000
    )
    with running_server(settings) as running:
        yield running


def engine_calls(server: RunningServer) -> list[float]:
    names = ("xmem.encode_key", "xmem.segment", "xmem.encode_value")
    return [server.metric("vidserve_inference_exec_count_total", model=n) for n in names]


def test_three_sessions_share_each_engine_call(
    batching_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    """Different frames and object counts: one encode_key, one segment and at most one
    encode_value call per step, and each session's masks as when it runs alone."""
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"], xmem_vectors[f"{SEQ}/masks_u8"]
    starts = [0, 4, 8]  # each session its own stretch of the clip
    objects = [[1], [1, 2], [1, 2, 3]]
    config = XMemConfig.from_dict(xmem_spec["config"])
    alone = []
    for start, ids in zip(starts, objects, strict=True):
        core = InferenceCore(eager_engines(hashed_xmem()), config)
        first = np.where(np.isin(masks[start], ids), masks[start], 0).astype(np.uint8)
        alone.append([core.step(frames[start], first, ids)] + [core.step(frames[start + k]) for k in (1, 2)])

    async def one_session(start: int, ids: list[int]) -> list[tuple[dict[str, Any], list[bytes]]]:
        session = await asyncio.to_thread(
            create, batching_server, session_body(xmem_spec, probabilities=True)
        )
        first = np.where(np.isin(masks[start], ids), masks[start], 0).astype(np.uint8)
        answers = []
        async with connect(session["stream_url"], max_size=None) as ws:
            await ws.recv()
            for k in range(3):
                if k == 0:
                    await ws.send(json.dumps({"type": "frame", "mask": png_mask(first), "objects": ids}))
                await ws.send(png(frames[start + k]))
                answers.append(await recv_result(ws))
        return answers

    async def run() -> list[list[tuple[dict[str, Any], list[bytes]]]]:
        return await asyncio.gather(*(one_session(s, i) for s, i in zip(starts, objects, strict=True)))

    before = engine_calls(batching_server)
    results = asyncio.run(run())
    key, segment, value = (a - b for a, b in zip(engine_calls(batching_server), before, strict=True))
    assert key == 3  # three steps, each one call for all three sessions
    assert segment == 2  # frames 1 and 2 (frame 0 brings every object's mask)
    assert value <= 3
    for session, want in zip(results, alone, strict=True):
        for k, ((message, binaries), reference) in enumerate(zip(session, want, strict=True)):
            assert message["tracked"] == reference.object_ids
            assert_argmax(index_of(binaries[0]), reference.prob.numpy(), reference.object_ids, f"frame {k}")
            probabilities = [index_of(b).astype(np.float32) / 255 for b in binaries[1:]]
            np.testing.assert_allclose(probabilities, reference.prob.numpy()[1:], atol=1 / 255 + 1e-3)


def test_rest_frames_controls_and_rle(
    xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    """An editor without a websocket: masks as RLE, object removal, per-frame REST steps."""
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"], xmem_vectors[f"{SEQ}/masks_u8"]
    session = create(xmem_server, session_body(xmem_spec, output_format="rle"))
    url = f"{xmem_server.url}/v1/sessions/{session['id']}"
    from server.tasks.segmentation.masks import encode_rle

    rles = {str(i): encode_rle((masks[0] == i).astype(np.uint8)) for i in (1, 2)}
    first = httpx.post(
        f"{url}/frames", files={"image": png(frames[0])}, data={"rle": json.dumps(rles)}, timeout=120
    )
    assert first.status_code == 200, first.text
    assert first.json()["tracked"] == [1, 2] and set(first.json()["rles"]) == {"1", "2"}
    removed = httpx.delete(f"{url}/objects/2")
    assert removed.status_code == 202 and removed.json()["tracked_after"] == [1]
    second = httpx.post(f"{url}/frames", files={"image": png(frames[1])}, timeout=120).json()
    assert second["frame_index"] == 1 and second["tracked"] == [1]
    unknown = httpx.delete(f"{url}/objects/9")
    assert unknown.status_code == 422 and "unknown object id 9" in unknown.json()["error"]["message"]
    reset = httpx.post(f"{url}/reset")
    assert reset.status_code == 202 and reset.json()["tracked_after"] == []
    no_mask = httpx.post(f"{url}/frames", files={"image": png(frames[2])}, timeout=120)
    assert no_mask.status_code == 422 and "no object yet" in no_mask.json()["error"]["message"]


def test_bad_input_over_the_stream(
    xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"], xmem_vectors[f"{SEQ}/masks_u8"]
    session = create(xmem_server, session_body(xmem_spec, max_objects=2))
    wrong_size = np.zeros((32, 32), np.uint8)
    bad_rle = {"format": "rle", "objects": {"1": {"size": [64, 96], "counts": [10, 5]}}}

    async def run() -> list[dict[str, Any]]:
        answers = []
        async with connect(session["stream_url"], max_size=None) as ws:
            await ws.recv()

            async def frame(data: bytes, header: dict[str, Any] | None = None) -> None:
                if header:
                    await ws.send(json.dumps({"type": "frame", **header}))
                await ws.send(data)
                answers.append((await recv_result(ws))[0])

            async def control(message: dict[str, Any]) -> None:
                await ws.send(json.dumps(message))
                answers.append(json.loads(await ws.recv()))

            await frame(png(frames[0]))  # 0: before any mask
            await frame(png(frames[1]), {"mask": png_mask(wrong_size)})  # 1: mask of the wrong size
            await frame(png(frames[2]), {"mask": png_mask(masks[0])})  # 2: three objects, max 2
            await frame(png(frames[3]), {"mask": bad_rle})  # 3: counts do not add up
            await frame(png(frames[4]), {"mask": {"format": "png", "data": "iVBORw0KGgo="}})  # 4: corrupt
            await frame(b"\x89PNG\r\n\x1a\nnot really")  # 5: a corrupt frame
            one_two = np.where(masks[0] <= 2, masks[0], 0).astype(np.uint8)
            await frame(png(frames[6]), {"mask": png_mask(one_two)})  # 6: good
            await control({"type": "remove_object", "object_id": 7})  # unknown object
            await frame(png(np.zeros((32, 32, 3), np.uint8)))  # 7: another size mid-stream
            await frame(png(frames[8]))  # 8: good again
        return answers

    answers = asyncio.run(run())
    summary = [(a["type"], a.get("code"), a.get("frame_index")) for a in answers]
    assert summary == [
        ("error", "invalid_argument", 0),
        ("error", "mask_size_mismatch", 1),
        ("error", "invalid_argument", 2),
        ("error", "invalid_rle", 3),
        ("error", "invalid_mask", 4),
        ("error", "invalid_image", 5),
        ("result", None, 6),
        ("error", "invalid_argument", None),
        ("error", "invalid_argument", 7),
        ("result", None, 8),
    ]
    assert "no object yet" in answers[0]["message"] and "max_objects" in answers[2]["message"]
    assert "15" in answers[3]["message"] and "unknown object id 7" in answers[7]["message"]
    assert "never resized" in answers[8]["message"]


def test_memory_budget_and_expiry(
    hashed_checkpoint: Path, engine_repository: Path, xmem_spec: dict[str, Any], xmem_vectors: Any
) -> None:
    """A session that would not fit is refused with 429; expiry gives the bytes back."""
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"], xmem_vectors[f"{SEQ}/masks_u8"]
    body = session_body(xmem_spec)
    one_session = 60 * 2**20  # the bound of one default-ish session at 480p is far above this
    settings = xmem_settings(
        hashed_checkpoint, engine_repository, session_ttl_s=6.0, memory_budget_bytes=one_session
    )
    with running_server(settings) as server:
        refused = httpx.post(f"{server.url}/v1/sessions", json={"task": "segment"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "memory_budget_exceeded"
        session = create(server, {**body, "max_objects": 2, "processing_size": 64})
        first = httpx.post(
            f"{server.url}/v1/sessions/{session['id']}/frames",
            files={
                "image": png(frames[0]),
                "mask": encode_index_png(np.where(masks[0] <= 2, masks[0], 0).astype(np.uint8)),
            },
            timeout=120,
        )
        assert first.status_code == 200, first.text
        held = sum(
            server.metric("vidserve_segmentation_memory_bytes", tier=t) for t in ("working", "sensory")
        )
        assert held > 0 and server.metric("vidserve_segmentation_memory_reserved_bytes") > 0
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/v1/sessions/{session['id']}").status_code != 410:
            assert time.monotonic() < deadline, "the idle session never expired"
            time.sleep(0.1)
        assert (
            httpx.get(f"{server.url}/v1/sessions/{session['id']}").json()["error"]["code"]
            == "session_expired"
        )
        for tier in ("working", "long_term", "sensory"):
            assert server.metric("vidserve_segmentation_memory_bytes", tier=tier) == 0
        assert server.metric("vidserve_segmentation_memory_reserved_bytes") == 0
        with pytest.raises(ConnectionClosed):
            asyncio.run(_closed(session["stream_url"]))


async def _closed(url: str) -> None:
    async with connect(url) as ws:
        await ws.recv()


def test_rest_frame_errors_are_counted_and_bounded(
    hashed_checkpoint: Path, engine_repository: Path, xmem_spec: dict[str, Any]
) -> None:
    """A REST frame over the upload limit gets 413, a corrupt one 400; both are counted as
    answered with an error, none as dropped."""
    settings = xmem_settings(hashed_checkpoint, engine_repository, max_message_bytes=4096)
    with running_server(settings) as server:
        session = create(server, session_body(xmem_spec))
        url = f"{server.url}/v1/sessions/{session['id']}"
        too_big = httpx.post(f"{url}/frames", files={"image": b"\0" * 5000})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
        corrupt = httpx.post(f"{url}/frames", files={"image": b"not an image"})
        assert corrupt.status_code == 400 and corrupt.json()["error"]["code"] == "invalid_image"
        counters = httpx.get(url).json()
        assert [counters[k] for k in ("frames_in", "frames_failed", "dropped")] == [2, 2, 0]


def test_masks_before_the_first_frame_are_bounded(xmem_server: RunningServer) -> None:
    """Before a frame fixes the size, a mask's own size is trusted only up to the pixel
    limit, and no more objects than the session tracks are decoded: a small message cannot
    make the server allocate gigabytes."""
    session = create(xmem_server, {"task": "segment", "max_objects": 2})
    url = f"{xmem_server.url}/v1/sessions/{session['id']}/mask"
    huge = {"1": {"size": [100_000, 100_000], "counts": [0, 10**10]}}
    many = {str(i): {"size": [4, 4], "counts": [16]} for i in (1, 2, 3)}
    side = 4096  # 16.8 MP, over the default 3840×2160 limit
    header_only = Image.new("P", (side, side))
    big_png = io.BytesIO()
    header_only.save(big_png, "PNG")
    cases = [
        ({"format": "rle", "objects": huge}, "mask_too_large"),
        ({"format": "rle", "objects": many}, "too_many_objects"),
        ({"format": "png", "data": base64.b64encode(big_png.getvalue()).decode()}, "mask_too_large"),
    ]
    for mask, code in cases:
        response = httpx.post(url, json={"mask": mask})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code
    assert httpx.get(f"{xmem_server.url}/v1/sessions/{session['id']}").status_code == 200


def test_concurrent_rest_frames_get_their_own_indices(
    xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    """Frames posted at once are numbered as they arrive, one index each, and run one at a
    time; none is left counted as in flight."""
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"], xmem_vectors[f"{SEQ}/masks_u8"]
    session = create(xmem_server, session_body(xmem_spec))
    url = f"{xmem_server.url}/v1/sessions/{session['id']}"
    mask = np.where(masks[0] <= 2, masks[0], 0).astype(np.uint8)
    first = httpx.post(
        f"{url}/frames", files={"image": png(frames[0]), "mask": encode_index_png(mask)}, timeout=120
    )
    assert first.status_code == 200, first.text

    async def post_three() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            posts = [client.post(f"{url}/frames", files={"image": png(frames[k])}) for k in (1, 2, 3)]
            return list(await asyncio.gather(*posts))

    answers = asyncio.run(post_three())
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert sorted(r.json()["frame_index"] for r in answers) == [1, 2, 3]
    counters = httpx.get(url).json()
    assert (counters["frames_done"], counters["in_flight"], counters["dropped"]) == (4, 0, 0)


def test_a_rest_frame_during_a_drain_is_refused(
    xmem_server: RunningServer, xmem_vectors: Any, xmem_spec: dict[str, Any]
) -> None:
    """Once a drain has begun, a REST frame is answered 503 and is not taken in: the drain
    waits for frames in flight, so it must not admit new ones."""
    frames = xmem_vectors[f"{SEQ}/frames_u8"]
    session = create(xmem_server, session_body(xmem_spec))
    url = f"{xmem_server.url}/v1/sessions/{session['id']}"
    xmem_server.state.accepting = False
    try:
        refused = httpx.post(f"{url}/frames", files={"image": png(frames[0])}, timeout=120)
    finally:
        xmem_server.state.accepting = True
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
    info = httpx.get(url).json()
    assert info["frames_in"] == 0 and info["in_flight"] == 0
    httpx.delete(url)


def test_the_cli_and_the_server_resize_alike(
    xmem_server: RunningServer,
    xmem_vectors: Any,
    xmem_spec: dict[str, Any],
    hashed_checkpoint: Path,
    tmp_path: Path,
) -> None:
    """At a processing size below the frames', ``python -m models segment --processing-size``
    gives the masks a server session with that processing size gives: one resize, there
    and back, shared by both (``models/xmem/inference_core.py``)."""
    frames, masks = xmem_vectors["seq_b/frames_u8"][:6], xmem_vectors["seq_b/masks_u8"]  # 72×100
    first = np.where(np.isin(masks[0], [1, 2]), masks[0], 0).astype(np.uint8)
    assert min(frames.shape[1:3]) > 64, "the frames must be larger than the processing size"
    folder, out = tmp_path / "frames", tmp_path / "out"
    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    Image.fromarray(first).save(tmp_path / "mask0.png")
    (tmp_path / "config.json").write_text(json.dumps(xmem_spec["config"]))
    done = subprocess.run(
        [
            sys.executable, "-m", "models", "segment", str(folder), "--weights", str(hashed_checkpoint),
            "--prompt", f"0:{tmp_path / 'mask0.png'}", "--config", str(tmp_path / "config.json"),
            "--processing-size", "64", "--out", str(out),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    session = create(xmem_server, session_body(xmem_spec, processing_size=64))
    url = f"{xmem_server.url}/v1/sessions/{session['id']}/frames"
    for t, frame in enumerate(frames):
        files = {"image": png(frame)} | ({"mask": encode_index_png(first)} if t == 0 else {})
        answer = httpx.post(url, files=files, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["tracked"] == [1, 2]
        served = index_of(base64.b64decode(answer.json()["data"][0]))
        assert set(np.unique(served)) == {0, 1, 2}
        offline = np.asarray(Image.open(out / f"{t:05d}.png"))
        assert served.shape == frames.shape[1:3] == offline.shape
        # why a few pixels: TorchScript beside eager, on near ties of the bilinear upsampling
        assert np.mean(served != offline) < 0.002, f"frame {t}"
