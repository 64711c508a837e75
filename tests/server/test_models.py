"""Models are ready one by one: a model that is loading or has failed does not take the
others down; GET /v1/models says each model's state and, for a failed one, what to do;
/readyz stays the whole server's readiness."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from server.settings import Settings
from tests.server.support import RunningServer, panning_frames, png, running_server


@contextmanager
def stalling_mirror() -> Iterator[tuple[str, threading.Event]]:
    """An HTTP server on 127.0.0.1 that accepts every connection and answers nothing until
    the event is set, then closes them: a weights download that hangs, then breaks off."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    release = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not release.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", release
    finally:
        release.set()
        thread.join(timeout=10)
        listener.close()


def dead_url() -> str:
    """A port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def models_by_name(server: RunningServer) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}


def wait_for(
    server: RunningServer, states: dict[str, str], timeout: float = 300
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        models = models_by_name(server)
        if all(models[name]["state"] == state for name, state in states.items()):
            return models
        assert time.monotonic() < deadline, f"models never reached {states}: {models}"
        time.sleep(0.1)


def settings_without_xmem_weights(
    weights: Path, repository: Path, cache: Path, mirror: str, models: list[str]
) -> Settings:
    """rife-4.0 with its weights; XMem to be fetched into an empty cache from ``mirror``
    (VIDSERVE_WEIGHTS_MIRROR), the real fetch path, which cannot get it."""
    return Settings(
        models=models,
        weights={"rife-4.0": weights},
        model_repository=repository,
        cache_dir=cache,
        weights_mirror=mirror,
        engine="torchscript",
        max_queue_delay_ms=2.0,
    )


def interpolate_once(server: RunningServer) -> httpx.Response:
    pair = panning_frames(2)
    files = {"frame0": png(pair[0]), "frame1": png(pair[1])}
    return httpx.post(f"{server.url}/v1/interpolate", files=files, timeout=120)


def test_a_model_without_weights_fails_alone(
    rife_v40_weights: Path, engine_repository: Path, tmp_path: Path
) -> None:
    settings = settings_without_xmem_weights(
        rife_v40_weights, engine_repository, tmp_path / "cache", dead_url(), ["rife-4.0", "xmem"]
    )
    with running_server(settings, wait_ready=False) as server:
        models = wait_for(server, {"rife-4.0": "ready", "xmem": "failed"})
        assert list(models) == ["rife-4.0", "xmem"]
        xmem, rife = models["xmem"], models["rife-4.0"]
        assert xmem["task"] == "segment" and rife["task"] == "interpolate"
        reason = xmem["reason"]
        assert "XMem.pth" in reason and str(tmp_path / "cache") in reason  # which file, and where it goes
        assert "python -m models fetch xmem" in reason and "VIDSERVE_WEIGHTS" in reason  # how to get it
        assert xmem["engines"] == []
        assert [p["part"] for p in rife["engines"]] == ["full"] and rife["engines"][0]["warm"] is True
        assert rife["warmup_s"] > 0 and xmem["warmup_s"] is None
        assert httpx.get(f"{server.url}/v1/models/xmem").json() == xmem

        assert interpolate_once(server).status_code == 200  # the ready model is served
        opened = httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate"})
        assert opened.status_code == 201
        refused = httpx.post(f"{server.url}/v1/sessions", json={"task": "segment"})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        error = refused.json()["error"]
        assert error["code"] == "not_ready" and "xmem failed to load" in error["message"]
        assert "XMem.pth" in error["message"]

        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "xmem" in ready.json()["error"] and [e["model"] for e in ready.json()["engines"]] == [
            "rife-4.0"
        ]
        unknown = httpx.get(f"{server.url}/v1/models/rife-9")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"


def test_a_missing_mounted_file_is_named(
    rife_v40_weights: Path, engine_repository: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "mounted" / "XMem.pth"
    settings = Settings(
        models=["xmem", "rife-4.0"],
        weights={"rife-4.0": rife_v40_weights, "xmem": missing},
        model_repository=engine_repository,
        engine="torchscript",
    )
    with running_server(settings, wait_ready=False) as server:
        models = wait_for(server, {"rife-4.0": "ready", "xmem": "failed"})
        assert str(missing) in models["xmem"]["reason"] and "VIDSERVE_WEIGHTS" in models["xmem"]["reason"]
        assert interpolate_once(server).status_code == 200


def test_a_model_still_loading_does_not_hold_up_the_others(
    rife_v40_weights: Path, engine_repository: Path, tmp_path: Path
) -> None:
    """XMem's download hangs; rife-4.0, configured after it, is served meanwhile."""
    with stalling_mirror() as (mirror, release):
        settings = settings_without_xmem_weights(
            rife_v40_weights, engine_repository, tmp_path / "cache", mirror, ["xmem", "rife-4.0"]
        )
        with running_server(settings, wait_ready=False) as server:
            wait_for(server, {"rife-4.0": "ready", "xmem": "loading"})
            assert interpolate_once(server).status_code == 200
            refused = httpx.post(f"{server.url}/v1/sessions", json={"task": "segment"})
            assert refused.status_code == 503 and "still loading" in refused.json()["error"]["message"]
            assert httpx.get(f"{server.url}/readyz").status_code == 503
            release.set()  # the download breaks off
            models = wait_for(server, {"xmem": "failed"})
            assert "XMem.pth" in models["xmem"]["reason"]


def test_a_model_of_another_task_is_refused(
    rife_v40_weights: Path, engine_repository: Path, tmp_path: Path
) -> None:
    settings = settings_without_xmem_weights(
        rife_v40_weights, engine_repository, tmp_path / "cache", dead_url(), ["rife-4.0", "xmem"]
    )
    with running_server(settings, wait_ready=False) as server:
        wait_for(server, {"rife-4.0": "ready", "xmem": "failed"})
        for body in ({"task": "segment", "model": "rife-4.0"}, {"task": "interpolate", "model": "xmem"}):
            response = httpx.post(f"{server.url}/v1/sessions", json=body)
            assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_model"
            assert "is not a" in response.json()["error"]["message"]
