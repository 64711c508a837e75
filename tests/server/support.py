"""A real uvicorn server on a free port, in a thread, and the frames tests send it."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.settings import Settings
from server.state import ServerState
from tests.conftest import REPO_ROOT

DEMO = REPO_ROOT / "docs" / "demo" / "frame0.png"


@dataclass
class RunningServer:
    """A started server: where to reach it, and its state for white-box checks."""

    url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT
    state: ServerState

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics, read over HTTP (0 when the series does not exist yet)."""
        text = httpx.get(f"{self.url}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(settings: Settings, *, wait_ready: bool = True) -> Iterator[RunningServer]:
    """Start uvicorn with ``settings`` on a free port; stop it on exit."""
    # why a socket bound here: a port picked, closed and bound again later can be taken in
    # between by any outgoing connection on a busy machine
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", ws_max_size=settings.max_message_bytes)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app.state.server)
    try:
        _wait(running, thread, ready=wait_ready)
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wait(running: RunningServer, thread: threading.Thread, *, ready: bool, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    path = "/readyz" if ready else "/healthz"
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the server at {running.url} stopped during startup")
        try:
            response = httpx.get(running.url + path, timeout=5)
            if response.status_code == 200:
                return
            if response.status_code == 503 and response.json().get("error"):
                raise RuntimeError(f"server failed to load: {response.json()['error']}")
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server at {running.url} not {'ready' if ready else 'live'} in {timeout} s")


def server_settings(weights: Path, repository: Path, **overrides: Any) -> Settings:
    """Settings for a test server: the real v4.0 weights, a per-run engine repository."""
    values: dict[str, Any] = {
        "models": ["rife-4.0"],
        "weights": {"rife-4.0": weights},
        "model_repository": repository,
        "engine": "torchscript",
        "max_queue_delay_ms": 2.0,
        **overrides,
    }
    return Settings(**values)


def scene(height: int = 64, width: int = 96) -> np.ndarray:
    """A photograph, uint8 H'×W'×3, that tests pan a window over."""
    image = np.asarray(Image.open(DEMO).convert("RGB"))
    assert image.shape[0] >= height + 40 and image.shape[1] >= width + 80, "demo frame too small"
    return image


def panning_frames(count: int, height: int = 64, width: int = 96, step: int = 2) -> list[np.ndarray]:
    """``count`` uint8 H×W×3 frames of a slow pan: consecutive frames are never a scene change."""
    image = scene(height, width)
    return [
        np.ascontiguousarray(image[20 : 20 + height, 10 + i * step : 10 + i * step + width])
        for i in range(count)
    ]


def png(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, "PNG")
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def receive_frame_answer(ws: Any) -> tuple[list[tuple[dict[str, Any], bytes]], dict[str, Any]]:
    """Messages up to and including one frame's ``frame_done`` or ``error``.

    Returns the (header, image bytes) results and the closing message.
    """
    results: list[tuple[dict[str, Any], bytes]] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if message["type"] == "result":
            data = await asyncio.wait_for(ws.recv(), 120)
            assert isinstance(data, bytes) and len(data) == message["bytes"]
            results.append((message, data))
        elif message["type"] in ("frame_done", "error"):
            return results, message


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds, so a
    missed moment fails the test instead of hanging the suite."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {what}")
        await asyncio.sleep(0.02)
