"""Sessions in a state store (a real redis-server): opened on one replica, resumed on another
exactly, leased to one replica at a time, refused from other weights, gone everywhere once
deleted. Replicas here are servers in this process; tests/deploy/test_replicas.py runs them
as processes behind nginx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.settings import Settings
from tests.server.support import RunningServer, decode, eventually, panning_frames, png, running_server

FRAMES = 12
MEM_EVERY = 2  # why: memory frames, consolidation and the sensory memory all run within 12 frames


def replica_settings(
    weights: Path, repository: Path, redis_url: str, name: str, rife: Path | None = None, **extra: Any
) -> Settings:
    models = ["xmem", "rife-4.0"] if rife else ["xmem"]
    paths = {"xmem": weights, **({"rife-4.0": rife} if rife else {})}
    values: dict[str, Any] = {
        "models": models,
        "weights": paths,
        "model_repository": repository,
        "engine": "torchscript",
        "max_queue_delay_ms": 2.0,
        "state_store": redis_url,
        "replica_id": name,
        "lease_ttl_s": 3.0,
        **extra,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def replica_a(
    hashed_checkpoint: Path, engine_repository: Path, redis_url: str, rife_v40_weights: Path
) -> Iterator[RunningServer]:
    settings = replica_settings(hashed_checkpoint, engine_repository, redis_url, "a", rife_v40_weights)
    with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def replica_b(
    hashed_checkpoint: Path, engine_repository: Path, redis_url: str, rife_v40_weights: Path
) -> Iterator[RunningServer]:
    settings = replica_settings(hashed_checkpoint, engine_repository, redis_url, "b", rife_v40_weights)
    with running_server(settings) as running:
        yield running


def hand_over(server: RunningServer, session_id: str) -> dict[str, Any]:
    """GET the session on ``server`` until the replica holding it lets it go (it was asked for
    here and its stream detached): the restored session's object."""
    url = f"{server.url}/v1/sessions/{session_id}"

    async def restored() -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).status_code == 200

    asyncio.run(eventually(restored, f"session {session_id} handed over to {server.url}", 20))
    info: dict[str, Any] = server.state.sessions.get(session_id).public()
    return info


def first_mask(height: int = 64, width: int = 96) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[8:30, 10:40] = 1
    mask[34:60, 50:90] = 2
    return mask


def segment_body() -> dict[str, Any]:
    # why processing_size null: 64×96 as given; the default 480 makes each frame a 480p one
    return {
        "task": "segment",
        "processing_size": None,
        "mem_every": MEM_EVERY,
        "min_mid_term_frames": 2,
        "max_mid_term_frames": 3,
    }


def create(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/sessions", json=body, timeout=60)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def stream(
    url: str, frames: list[np.ndarray], start: int, with_mask: bool
) -> tuple[dict[str, Any], list[bytes]]:
    """Frames in order over one websocket: (the session message, each frame's index PNG)."""
    masks: list[bytes] = []
    async with connect(url, max_size=None) as ws:
        hello = json.loads(await ws.recv())
        for t, frame in enumerate(frames):
            if with_mask and t == 0:
                await ws.send(
                    json.dumps({"type": "frame", "frame_index": start, "mask": png_mask(first_mask())})
                )
            await ws.send(png(frame))
            message = json.loads(await ws.recv())
            assert message["type"] == "result", message
            assert message["frame_index"] == start + t
            binary = await ws.recv()
            assert isinstance(binary, bytes)
            masks.append(binary)
    return hello, masks


def png_mask(mask: np.ndarray) -> dict[str, str]:
    import base64

    return {"format": "png", "data": base64.b64encode(png(mask)).decode()}


def ws_url(server: RunningServer, session_id: str) -> str:
    return f"{server.ws_url}/v1/sessions/{session_id}/stream"


def test_a_stream_let_go_by_one_replica_resumes_on_another_exactly(
    replica_a: RunningServer, replica_b: RunningServer
) -> None:
    """A stream on replica a detaches after frame k; asked for on replica b, a checkpoints it and
    lets it go; b restores it, and the rest of the stream gives the uninterrupted masks."""
    frames = [np.ascontiguousarray(f) for f in panning_frames(FRAMES)]
    whole = create(replica_b, segment_body())
    _, expected = asyncio.run(stream(ws_url(replica_b, whole["id"]), frames, 0, with_mask=True))
    k = 6
    moved = create(replica_a, segment_body())
    assert moved["resumed_from_frame"] is None and not moved["resumed"]
    _, before = asyncio.run(stream(ws_url(replica_a, moved["id"]), frames[: k + 1], 0, with_mask=True))
    info = hand_over(replica_b, moved["id"])
    assert moved["id"] not in [s.id for s in replica_a.state.sessions.all()]  # let go there
    assert info["resumed"] and info["resumed_from_frame"] == k and info["frames_done"] == k + 1
    assert info["checkpoint"]["frame_index"] == k and info["checkpoint"]["bytes"] > 0  # the state's size
    hello, after = asyncio.run(
        stream(ws_url(replica_b, moved["id"]), frames[k + 1 :], k + 1, with_mask=False)
    )
    assert hello["resumed_from_frame"] == k
    for t, (got, want) in enumerate(zip(before + after, expected, strict=True)):
        assert np.array_equal(decode(got), decode(want)), f"frame {t}"
    assert info["memory"]["consolidations"] >= 1  # the long-term memory came along too
    after_info = httpx.get(f"{replica_b.url}/v1/sessions/{moved['id']}").json()
    assert not after_info["resumed"] and after_info["resumed_from_frame"] is None  # a frame ran since


def test_an_interpolation_session_resumes_with_its_kept_frame(
    replica_a: RunningServer, replica_b: RunningServer
) -> None:
    frames = panning_frames(3)
    body = {"task": "interpolate", "model": "rife-4.0", "factor": 2}

    async def pairs(url: str, sent: list[np.ndarray]) -> list[bytes]:
        out = []
        async with connect(url, max_size=None) as ws:
            await ws.recv()
            for frame in sent:
                await ws.send(png(frame))
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        out.append(message)
                    elif json.loads(message)["type"] == "frame_done":
                        break
        return out

    whole = create(replica_b, body)
    expected = asyncio.run(pairs(ws_url(replica_b, whole["id"]), frames))
    moved = create(replica_a, body)
    first = asyncio.run(pairs(ws_url(replica_a, moved["id"]), frames[:2]))
    hand_over(replica_b, moved["id"])
    rest = asyncio.run(pairs(ws_url(replica_b, moved["id"]), frames[2:]))
    assert len(first + rest) == len(expected) == 2
    for got, want in zip(first + rest, expected, strict=True):
        assert np.array_equal(decode(got), decode(want))


def test_two_replicas_racing_to_attach_one_session_one_wins_the_other_answers_4409(
    replica_a: RunningServer, replica_b: RunningServer
) -> None:
    """Both attach at once: one streams, the other is refused with 4409 (and its GET with 409)
    while the winner's stream is attached; once it detaches, the winner lets the session go
    to the replica that asked for it, at its next lease renewal."""
    session = create(replica_a, segment_body())
    url = f"/v1/sessions/{session['id']}"

    async def attach(server: RunningServer, other: RunningServer) -> int | str:
        try:
            async with connect(ws_url(server, session["id"]), max_size=None) as ws:
                hello = json.loads(await ws.recv())
                await asyncio.sleep(1.0)  # why: hold it while the other one tries
                async with httpx.AsyncClient() as client:
                    refused = await client.get(other.url + url)
                assert refused.status_code == 409, refused.text
                assert refused.json()["error"]["code"] == "session_active_elsewhere"
                assert "lease" in refused.json()["error"]["message"] and "Retry-After" in refused.headers
                return str(hello["type"])
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code

    async def race() -> list[int | str]:
        return list(await asyncio.gather(attach(replica_b, replica_a), attach(replica_a, replica_b)))

    outcomes = asyncio.run(race())
    assert sorted(outcomes, key=str) == sorted([4409, "session"], key=str), outcomes
    loser = replica_b if outcomes[0] == 4409 else replica_a

    async def handed_over() -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(loser.url + url)).status_code == 200

    asyncio.run(eventually(handed_over, "the detached session handed to the replica that asked", 15))
    assert loser.state.sessions.get(session["id"]).core.resumed


def test_state_saved_from_other_weights_is_refused(
    hashed_checkpoint: Path, engine_repository: Path, redis_url: str, replica_b: RunningServer, tmp_path: Path
) -> None:
    other = tmp_path / "xmem-other.pth"
    weights = torch.load(hashed_checkpoint, map_location="cpu")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    torch.save(weights, other)
    session = create(replica_b, segment_body())
    # why eager: nothing to export for weights used once
    settings = replica_settings(other, tmp_path / "repo", redis_url, "d", engine="eager")
    with running_server(settings) as replica_d:
        response = httpx.get(f"{replica_d.url}/v1/sessions/{session['id']}")
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "state_incompatible" and "weights" in error["message"]

        async def attach() -> tuple[int, str]:
            with pytest.raises(ConnectionClosed) as closed:
                async with connect(ws_url(replica_d, session["id"])) as ws:
                    await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

        code, reason = asyncio.run(attach())
        assert code == 4422 and "weights" in reason
    # refused, not consumed: the replica with the right weights still resumes it
    assert httpx.get(f"{replica_b.url}/v1/sessions/{session['id']}").status_code == 200


def test_a_session_deleted_on_one_replica_is_gone_on_every_replica(
    replica_a: RunningServer, replica_b: RunningServer
) -> None:
    session = create(replica_a, segment_body())
    assert httpx.delete(f"{replica_b.url}/v1/sessions/{session['id']}").status_code == 200
    response = httpx.get(f"{replica_a.url}/v1/sessions/{session['id']}")
    assert response.status_code == 410 and response.json()["error"]["code"] == "session_closed"
    unknown = httpx.get(f"{replica_b.url}/v1/sessions/no-such-session")
    assert unknown.status_code == 404


def test_a_rest_frame_restores_the_session_with_its_queued_mask(
    replica_a: RunningServer, replica_b: RunningServer
) -> None:
    """REST calls are first uses too: a mask queued on b restores the session there; handed
    to a, the queued mask travels in the checkpoint and applies to a's first REST frame."""
    session = create(replica_a, segment_body())
    url = f"/v1/sessions/{session['id']}"
    mask = httpx.post(f"{replica_b.url}{url}/mask", json={"mask": png_mask(first_mask())}, timeout=60)
    assert mask.status_code == 202, mask.text
    assert session["id"] in [s.id for s in replica_b.state.sessions.all()]
    hand_over(replica_a, session["id"])
    frame = panning_frames(1)[0]
    answer = httpx.post(f"{replica_a.url}{url}/frames", files={"image": png(frame)}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["tracked"] == [1, 2] and answer.json()["frame_index"] == 0
