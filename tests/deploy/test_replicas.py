"""Two ``python -m server`` replicas, a real redis-server and nginx with
deploy/nginx/vidserve.conf, all on loopback: a segmentation stream through the proxy survives
SIGTERM and SIGKILL of the replica that holds it, every frame answered and every mask the
same as an uninterrupted stream's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clients.python.aio import AsyncClient, AsyncSegmentationSession
from tests.conftest import REPO_ROOT
from tests.deploy.test_proxy import main_config, nginx_binary, nginx_command, render_config
from tests.server.support import free_port, panning_frames

CONF = REPO_ROOT / "deploy" / "nginx" / "vidserve.conf"
FRAMES = 12
KILL_AFTER = 6  # frames answered before the replica holding the stream is stopped
LEASE_TTL_S = 2.0


def first_mask() -> np.ndarray:
    mask = np.zeros((64, 96), np.uint8)
    mask[8:30, 10:40] = 1
    mask[34:60, 50:90] = 2
    return mask


@dataclass
class Replica:
    name: str  # VIDSERVE_REPLICA_ID
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=REPO_ROOT, env=self.env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"replica {self.name} exited: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"replica {self.name} not ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    proxy: str  # http://127.0.0.1:PORT of nginx
    replicas: dict[str, Replica]
    redis: redis.Redis
    stopped: list[Replica] = field(default_factory=list)

    def holder(self, session_id: str) -> Replica:
        lease = self.redis.get(f"vidserve:lease:{session_id}")
        assert isinstance(lease, bytes), "no replica holds the session"
        return self.replicas[lease.decode()]

    def restart_stopped(self) -> None:
        while self.stopped:
            self.stopped.pop().start()


@pytest.fixture(scope="module")
def cluster(
    hashed_checkpoint: Path, engine_repository: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    nginx = nginx_binary()
    root = tmp_path_factory.mktemp("cluster")
    proxy_port = free_port()
    replicas = {}
    for name in ("vidserve-1", "vidserve-2"):
        port = free_port()
        env = {
            **os.environ,
            "VIDSERVE_PORT": str(port),
            "VIDSERVE_MODELS": json.dumps(["xmem"]),
            "VIDSERVE_WEIGHTS": json.dumps({"xmem": str(hashed_checkpoint)}),
            "VIDSERVE_MODEL_REPOSITORY": str(engine_repository),
            "VIDSERVE_ENGINE": "torchscript",
            "VIDSERVE_MAX_QUEUE_DELAY_MS": "2",
            "VIDSERVE_STATE_STORE": redis_url,
            "VIDSERVE_REPLICA_ID": name,
            "VIDSERVE_LEASE_TTL_S": str(LEASE_TTL_S),
            "VIDSERVE_CHECKPOINT_EVERY": "1",
            "VIDSERVE_PUBLIC_URL": f"http://127.0.0.1:{proxy_port}",
            "VIDSERVE_DRAIN_TIMEOUT_S": "20",
        }
        replicas[name] = Replica(name, port, env, root / f"{name}.log")
    for replica in replicas.values():  # why one after the other: the first exports the engines
        replica.start()
    include = root / "vidserve.conf"
    addresses = {name: f"127.0.0.1:{r.port}" for name, r in replicas.items()}
    include.write_text(render_config(CONF.read_text(), f"127.0.0.1:{proxy_port}", addresses))
    config = main_config(root, include)
    proxy = subprocess.Popen([*nginx_command(nginx, config), "-g", "daemon off;"])
    client = redis.Redis.from_url(redis_url)
    try:
        _wait_for(f"http://127.0.0.1:{proxy_port}/healthz")
        yield Cluster(f"http://127.0.0.1:{proxy_port}", replicas, client)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        for replica in replicas.values():
            replica.stop(signal.SIGKILL)
        client.close()


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


async def _open(client: AsyncClient) -> AsyncSegmentationSession:
    # why processing_size None: 64×96 as given; the default 480 makes each frame a 480p one
    return await client.create_segmentation_session(
        processing_size=None, mem_every=2, min_mid_term_frames=2, max_mid_term_frames=3
    )


async def _uninterrupted(proxy: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    async with AsyncClient(proxy, timeout=120) as client:
        session = await _open(client)
        async with session.stream() as stream:
            results = [await stream.send(frames[0], mask=first_mask())]
            results += [await stream.send(frame) for frame in frames[1:]]
    return [r.mask for r in results if r.mask is not None]


async def _interrupted(
    cluster: Cluster, frames: list[np.ndarray], sig: int
) -> tuple[list[np.ndarray], dict[str, object]]:
    """The same frames through the proxy, the replica holding the stream stopped with ``sig``
    after ``KILL_AFTER`` frames: each frame's mask, and what the client saw on resuming."""
    async with AsyncClient(cluster.proxy, timeout=120, max_retries=10, backoff=0.2) as client:
        session = await _open(client)
        async with session.stream(resume=True) as stream:
            results = [await stream.send(frames[0], mask=first_mask())]
            results += [await stream.send(frame) for frame in frames[1:KILL_AFTER]]
            holder = cluster.holder(session.id)
            cluster.stopped.append(holder)
            await asyncio.to_thread(holder.stop, sig)
            results += [await stream.send(frame) for frame in frames[KILL_AFTER:]]
            seen = {
                "resumed_from_frame": stream.info.get("resumed_from_frame"),
                "replayed": stream.replayed,
                "recreated": stream.resumed,
                "stopped": holder.name,
                "now": cluster.holder(session.id).name,
                "indices": [r.frame_index for r in results],
            }
    return [r.mask for r in results if r.mask is not None], seen


def test_two_replicas_racing_to_attach_one_session_one_wins_the_other_answers_4409(cluster: Cluster) -> None:
    """The session opened through the proxy; both replicas asked to attach it at once."""
    created = httpx.post(f"{cluster.proxy}/v1/sessions", json={"task": "segment"}, timeout=60)
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]

    async def attach(replica: Replica) -> int | str:
        url = f"ws://127.0.0.1:{replica.port}/v1/sessions/{session_id}/stream"
        try:
            async with connect(url) as ws:
                hello = json.loads(await ws.recv())
                await asyncio.sleep(1.0)  # why: hold the lease while the other one tries
                return str(hello["type"])
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and "active on vidserve-" in exc.rcvd.reason, exc
            return exc.rcvd.code

    async def race() -> list[int | str]:
        return list(await asyncio.gather(*(attach(r) for r in cluster.replicas.values())))

    outcomes = asyncio.run(race())
    assert sorted(outcomes, key=str) == sorted([4409, "session"], key=str), outcomes


def test_state_from_another_model_s_weights_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    """A third replica on other weights, beside the same store: a session saved by the others
    is refused there with 409 / 4422 naming the weights, and stays for the right replicas."""
    base = cluster.replicas["vidserve-1"]
    weights = torch.load(json.loads(base.env["VIDSERVE_WEIGHTS"])["xmem"], map_location="cpu")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    torch.save(weights, tmp_path / "other.pth")
    env = {**base.env, "VIDSERVE_PORT": str(free_port()), "VIDSERVE_REPLICA_ID": "other"}
    env |= {"VIDSERVE_WEIGHTS": json.dumps({"xmem": str(tmp_path / "other.pth")}), "VIDSERVE_ENGINE": "eager"}
    other = Replica("other", int(env["VIDSERVE_PORT"]), env, tmp_path / "other.log")
    created = httpx.post(f"{cluster.proxy}/v1/sessions", json={"task": "segment"}, timeout=60).json()
    other.start()
    try:
        refused = httpx.get(f"{other.url}/v1/sessions/{created['id']}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "state_incompatible"
        assert "weights sha256" in refused.json()["error"]["message"]

        async def attach() -> tuple[int, str]:
            with pytest.raises(ConnectionClosed) as closed:
                async with connect(f"ws://127.0.0.1:{other.port}/v1/sessions/{created['id']}/stream") as ws:
                    await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

        code, reason = asyncio.run(attach())
        assert code == 4422 and "weights" in reason
    finally:
        other.stop()
    assert httpx.get(f"{cluster.proxy}/v1/sessions/{created['id']}").status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stream_through_the_proxy_survives_its_replica_stopping(cluster: Cluster, sig: int) -> None:
    cluster.restart_stopped()  # why here, not after: the last test's victim need not come back
    frames = [np.ascontiguousarray(f) for f in panning_frames(FRAMES)]
    expected = asyncio.run(_uninterrupted(cluster.proxy, frames))
    got, seen = asyncio.run(_interrupted(cluster, frames, sig))
    assert seen["now"] != seen["stopped"], seen
    assert seen["recreated"] == 0, seen  # resumed from the store, not re-created and re-primed
    assert seen["indices"] == list(range(FRAMES)), seen  # every frame answered, in order
    if sig == signal.SIGTERM:  # the drain checkpointed after the last answered frame
        assert seen["resumed_from_frame"] == KILL_AFTER - 1 and seen["replayed"] == 0, seen
    else:  # the last checkpoint was at a memory frame (every 2nd); the client sent the rest again
        resumed = seen["resumed_from_frame"]
        assert isinstance(resumed, int) and resumed <= KILL_AFTER - 1, seen
        assert seen["replayed"] == KILL_AFTER - 1 - resumed, seen
    assert len(got) == len(expected) == FRAMES
    for t, (mask, want) in enumerate(zip(got, expected, strict=True)):
        assert np.array_equal(mask, want), f"frame {t}: {seen}"
