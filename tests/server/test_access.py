"""API keys, ownership, quotas and origins on a real server: without a key a /v1 route or a
stream is refused (401, 4401) while probes stay open; a session or job is its key's alone
(another key gets 404 or 4404, never 403); quotas answer 429 with an honest Retry-After; a
browser page of another origin cannot change state or stream."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.video import VideoWriter
from server.app import _warn_if_open
from tests.conftest import REPO_ROOT
from tests.server.support import RunningServer, panning_frames, png, running_server, server_settings

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
KEYS = {
    KEY_A: {"name": "editor-a", "max_sessions": 1, "max_jobs": 1},
    KEY_B: {"name": "editor-b"},
}
TTL_S = 120.0
RESULT_TTL_S = 900.0
ALLOWED = "http://tools.example:3000"


@pytest.fixture(scope="module")
def keyed(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    settings = server_settings(
        rife_v40_weights,
        engine_repository,
        api_keys=KEYS,
        allowed_origins=[ALLOWED],
        session_ttl_s=TTL_S,
        job_result_ttl_s=RESULT_TTL_S,
    )
    with running_server(settings) as running:
        yield running


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def open_session(server: RunningServer, key: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/sessions", json={"task": "interpolate"}, headers=auth(key))


def test_no_key_or_a_wrong_one_is_refused_and_probes_stay_open(keyed: RunningServer) -> None:
    for headers in ({}, auth("not-a-key-of-this-server"), {"Authorization": "Basic abc"}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/sessions"), ("GET", "/v1/jobs")):
            response = httpx.request(
                method, f"{keyed.url}{path}", headers=headers, json={"task": "interpolate"}
            )
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/metrics", "/demo"):
        assert httpx.get(f"{keyed.url}{path}", follow_redirects=True).status_code == 200, path
    assert httpx.get(f"{keyed.url}/v1/models", headers=auth(KEY_B)).status_code == 200


def test_a_session_is_its_keys_alone(keyed: RunningServer) -> None:
    """Another key gets 404 for it, the same answer as for no session at all; its stream
    refuses that key with 4404 and a missing key with 4401."""
    created = open_session(keyed, KEY_B)
    assert created.status_code == 201, created.text
    session = created.json()
    url = f"{keyed.url}/v1/sessions/{session['id']}"
    other, missing = (
        httpx.get(url, headers=auth(KEY_A)),
        httpx.get(f"{keyed.url}/v1/sessions/nope", headers=auth(KEY_A)),
    )
    assert other.status_code == missing.status_code == 404
    assert other.json()["error"]["code"] == "unknown_session"
    assert httpx.delete(url, headers=auth(KEY_A)).status_code == 404
    assert httpx.get(url, headers=auth(KEY_B)).json()["state"] == "open"

    async def close_code(**kwargs: Any) -> tuple[int, str]:
        async with connect(session["stream_url"], **kwargs) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason

    assert asyncio.run(close_code(additional_headers=auth(KEY_A)))[0] == 4404
    code, reason = asyncio.run(close_code())
    assert code == 4401 and "API key" in reason
    httpx.delete(url, headers=auth(KEY_B))
    assert httpx.get(url, headers=auth(KEY_A)).status_code == 404  # gone, and still not said to A


def test_a_browser_streams_with_its_key_as_a_subprotocol(keyed: RunningServer) -> None:
    """Browsers cannot set headers on a websocket: the key travels as ``bearer.KEY`` beside
    ``vidserve``, and the server answers ``vidserve``, never the key."""
    session = open_session(keyed, KEY_B).json()
    frames = panning_frames(2)

    async def run() -> tuple[str | None, list[dict[str, Any]]]:
        protocols: Any = ["vidserve", f"bearer.{KEY_B}"]
        async with connect(session["stream_url"], subprotocols=protocols) as ws:
            answers = [json.loads(await ws.recv())]
            for frame in frames:
                await ws.send(png(frame))
                while (message := await ws.recv()) and not (
                    isinstance(message, str) and json.loads(message)["type"] == "frame_done"
                ):
                    pass
                answers.append(json.loads(message))
            return ws.subprotocol, answers

    chosen, answers = asyncio.run(run())
    assert chosen == "vidserve"
    assert answers[0]["type"] == "session" and [a["frame_index"] for a in answers[1:]] == [0, 1]
    httpx.delete(f"{keyed.url}/v1/sessions/{session['id']}", headers=auth(KEY_B))


def test_the_session_quota_answers_429_with_when_a_place_frees(keyed: RunningServer) -> None:
    first = open_session(keyed, KEY_A)
    assert first.status_code == 201
    refused = open_session(keyed, KEY_A)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert "max_sessions" in refused.json()["error"]["message"]
    # why a range: the one open session idles out TTL_S after its last use, a moment ago
    assert TTL_S - 10 <= int(refused.headers["retry-after"]) <= TTL_S
    assert open_session(keyed, KEY_B).status_code == 201  # another key's quota is its own
    httpx.delete(f"{keyed.url}/v1/sessions/{first.json()['id']}", headers=auth(KEY_A))
    assert open_session(keyed, KEY_A).status_code == 201


def small_video(path: Path) -> Path:
    frames = panning_frames(3)
    with VideoWriter(path, width=frames[0].shape[1], height=frames[0].shape[0], fps=Fraction(10)) as writer:
        for index, frame in enumerate(frames):
            writer.write(frame, index / 10)
    return path


def test_jobs_are_their_keys_and_a_finished_one_holds_its_place(keyed: RunningServer, tmp_path: Path) -> None:
    """B does not see A's job in the list, nor by id; A's quota of one job is held by the
    finished job until its result expires, and Retry-After says so (not 1 s)."""
    video = small_video(tmp_path / "pan.mp4")

    def submit(key: str) -> httpx.Response:
        with video.open("rb") as data:
            files = {"video": ("pan.mp4", data, "video/mp4")}
            return httpx.post(
                f"{keyed.url}/v1/jobs", files=files, data={"task": "interpolate"}, headers=auth(key)
            )

    submitted = submit(KEY_A)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{keyed.url}/v1/jobs/{job_id}", headers=auth(KEY_A)).json()["state"] != "done":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    assert [j["id"] for j in httpx.get(f"{keyed.url}/v1/jobs", headers=auth(KEY_A)).json()["jobs"]] == [
        job_id
    ]
    assert httpx.get(f"{keyed.url}/v1/jobs", headers=auth(KEY_B)).json()["jobs"] == []
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
        response = httpx.get(f"{keyed.url}{path}", headers=auth(KEY_B))
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_job"
    assert httpx.delete(f"{keyed.url}/v1/jobs/{job_id}", headers=auth(KEY_B)).status_code == 404
    refused = submit(KEY_A)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert RESULT_TTL_S - 60 <= int(refused.headers["retry-after"]) <= RESULT_TTL_S
    assert httpx.delete(f"{keyed.url}/v1/jobs/{job_id}", headers=auth(KEY_A)).status_code == 200
    again = submit(KEY_A)
    assert again.status_code == 202
    httpx.delete(f"{keyed.url}/v1/jobs/{again.json()['id']}", headers=auth(KEY_A))


def test_a_page_of_another_origin_cannot_change_state_or_stream(keyed: RunningServer) -> None:
    own = keyed.url
    evil = {"Origin": "http://evil.example", **auth(KEY_B)}
    refused = httpx.post(f"{keyed.url}/v1/sessions", json={"task": "interpolate"}, headers=evil)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert httpx.get(f"{keyed.url}/v1/models", headers=evil).status_code == 200  # reading is not changing
    for origin in (own, ALLOWED):
        response = httpx.post(
            f"{keyed.url}/v1/sessions",
            json={"task": "interpolate"},
            headers={"Origin": origin, **auth(KEY_B)},
        )
        assert response.status_code == 201, (origin, response.text)
        session = response.json()
    assert not httpx.post(
        f"{keyed.url}/v1/sessions", json={"task": "interpolate"}, headers={"Origin": own}
    ).is_success

    async def close_code() -> int:
        headers = {"Origin": "http://evil.example", **auth(KEY_B)}
        async with connect(session["stream_url"], additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    assert asyncio.run(close_code()) == 4403


def test_a_forged_host_decides_nothing(rife_v40_weights: Path, engine_repository: Path) -> None:
    """``stream_url`` comes from VIDSERVE_PUBLIC_URL; a Host the server does not answer to is
    refused on /v1 (it would send clients, and their keys, elsewhere), probes stay open."""
    settings = server_settings(rife_v40_weights, engine_repository, public_url="https://vidserve.example")
    body = {"task": "interpolate"}
    with running_server(settings) as running:
        proxied = httpx.post(f"{running.url}/v1/sessions", json=body, headers={"Host": "vidserve.example"})
        forged = httpx.post(f"{running.url}/v1/sessions", json=body, headers={"Host": "evil.example:80"})
        probe = httpx.get(f"{running.url}/readyz", headers={"Host": "10.1.2.3:8000"})
    assert proxied.status_code == 201
    assert proxied.json()["stream_url"].startswith("wss://vidserve.example/v1/sessions/")
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "untrusted_host"
    assert "VIDSERVE_PUBLIC_URL" in forged.json()["error"]["message"]
    assert probe.status_code == 200


def test_a_host_is_trusted_when_configured(rife_v40_weights: Path, engine_repository: Path) -> None:
    settings = server_settings(rife_v40_weights, engine_repository, allowed_hosts=["gpu-7.lan"])
    with running_server(settings) as running:
        lan = httpx.post(
            f"{running.url}/v1/sessions", json={"task": "interpolate"}, headers={"Host": "gpu-7.lan:8000"}
        )
        other = httpx.get(f"{running.url}/v1/models", headers={"Host": "gpu-8.lan:8000"})
    assert lan.status_code == 201 and lan.json()["stream_url"].startswith("ws://gpu-7.lan:8000/")
    assert other.status_code == 400


def test_an_open_server_on_a_public_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    from server.settings import Settings

    with caplog.at_level(logging.WARNING, logger="server.app"):
        _warn_if_open(Settings(host="0.0.0.0"))
        _warn_if_open(Settings(host="127.0.0.1"))
        _warn_if_open(Settings(host="0.0.0.0", api_keys=KEYS))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "without API keys" in warnings[0] and "VIDSERVE_API_KEYS" in warnings[0]


def test_bad_keys_are_refused_at_start_without_printing_them() -> None:
    secret = "Sh0rtS3cret"  # too short to be a key, and found nowhere else in an error
    done = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={"VIDSERVE_API_KEYS": json.dumps({secret: {"name": "x"}}), "PATH": ""},
    )
    assert done.returncode == 2 and "api_keys" in done.stderr and "at least 16 characters" in done.stderr
    assert secret not in done.stderr
