"""SIGTERM to a real ``python -m server`` during a stream: the frame in flight finishes and
gets its result, later frames are answered as refused, /readyz turns false, the socket
closes with 1001, and the process exits cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import REPO_ROOT
from tests.server.support import eventually, free_port, panning_frames, png, receive_frame_answer


def start_server(weights: Path, repository: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``python -m server``, its log lines into ``log`` (a file: a pipe nobody reads while the
    test runs would fill and block the server)."""
    env = {
        **os.environ,
        "VIDSERVE_PORT": str(port),
        "VIDSERVE_WEIGHTS": json.dumps({"rife-4.0": str(weights)}),
        "VIDSERVE_MODEL_REPOSITORY": str(repository),
        "VIDSERVE_ENGINE": "torchscript",
        "VIDSERVE_MAX_QUEUE_DELAY_MS": "6000",  # why: holds the frame in flight while we signal
        "VIDSERVE_LOG_FORMAT": "json",
    }
    return subprocess.Popen([sys.executable, "-m", "server"], cwd=REPO_ROOT, env=env, stderr=log)


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during startup"
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready")


def test_sigterm_drains_a_stream(rife_v40_weights: Path, engine_repository: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = start_server(rife_v40_weights, engine_repository, port, log)
    try:
        wait_ready(url, process)
        answers, code, ready = asyncio.run(stream_and_stop(url, process))
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    logs = log_path.read_text()
    first, in_flight, late = answers
    assert first[1]["type"] == "frame_done"
    assert in_flight[1] == {**in_flight[1], "type": "frame_done", "frame_index": 1, "results": 1}
    assert late[1] == {**late[1], "type": "error", "frame_index": 2, "code": "shutting_down"}
    assert code == 1001
    assert ready == (503, True)
    assert any(
        json.loads(line).get("message", "").startswith("draining")
        for line in logs.splitlines()
        if line.startswith("{")
    )


async def stream_and_stop(
    url: str, process: subprocess.Popen[bytes]
) -> tuple[list[Any], int | None, tuple[int, bool]]:
    frames = panning_frames(3)
    async with httpx.AsyncClient() as client:
        session = (await client.post(f"{url}/v1/sessions", json={"task": "interpolate"})).json()
        async with connect(session["stream_url"]) as ws:
            await ws.recv()
            await ws.send(png(frames[0]))
            answers = [await receive_frame_answer(ws)]
            await ws.send(png(frames[1]))
            await ws.send(png(frames[2]))

            async def is_in_flight() -> bool:
                return bool((await client.get(f"{url}/v1/sessions/{session['id']}")).json()["in_flight"] >= 1)

            await eventually(is_in_flight, "frame 1 in flight")
            process.send_signal(signal.SIGTERM)

            async def is_draining() -> bool:
                return (await client.get(f"{url}/readyz")).status_code == 503

            await eventually(is_draining, "/readyz answering 503 after SIGTERM", timeout=5)
            readyz = await client.get(f"{url}/readyz")
            ready = (readyz.status_code, readyz.json()["draining"])
            answers.append(await receive_frame_answer(ws))
            answers.append(await receive_frame_answer(ws))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
    return answers, closed.value.rcvd.code if closed.value.rcvd else None, ready
