"""Every client against a real server with API keys (RIFE v4.0, TorchScript on CPU): the
Python client with its key (REST, a stream, a job) and without one (Unauthorized, 4401), a
used-up quota raised at once rather than waited for minutes, ``python -m clients
--api-key`` and its one-line errors that never show the key, and the browser demo asking
for the key, then streaming with it as a websocket subprotocol."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients import (
    AsyncClient,
    AsyncInterpolationSession,
    Client,
    InterpolationStream,
    Overloaded,
    QuotaExceeded,
    StreamClosed,
    StreamNotFound,
    StreamUnauthorized,
    Unauthorized,
)
from clients.cli import main
from models.video import probe
from tests.clients.test_cli import cli
from tests.clients.test_web_demo import HEIGHT, WIDTH, Page, artifacts, browser, chromium, pan_webm
from tests.models.test_video import make_video
from tests.server.support import RunningServer, panning_frames, running_server, server_settings

__all__ = ["artifacts", "chromium"]  # fixtures, imported for pytest to find

KEY = "editor-key-0123456789abcdef"
TIGHT = "tight-key-0123456789abcdef"  # one session and one job at most
WRONG = "not-a-key-of-this-server-0123"
KEYS = {
    KEY: {"name": "editor"},
    TIGHT: {"name": "tight", "max_sessions": 1, "max_jobs": 1},
}
TTL_S = 300.0  # the default: a used-up session quota frees in minutes, not seconds
PROMPTLY_S = 5.0  # a refusal answered at once; far under any Retry-After here


@pytest.fixture(scope="module")
def keyed(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    settings = server_settings(rife_v40_weights, engine_repository, api_keys=KEYS, session_ttl_s=TTL_S)
    with running_server(settings) as running:
        yield running


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the developer's shell holds, each test sets the variable itself."""
    monkeypatch.delenv("VIDSERVE_API_KEY", raising=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four frames of a pan, H.264 without audio."""
    path = tmp_path_factory.mktemp("keyed_clip") / "pan.mp4"
    make_video(path, panning_frames(4), fps=10, audio=False)
    return path


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stream_of(client: Client, session_id: str, stream_url: str) -> InterpolationStream:
    """A stream on a session another client made, as this client would open it."""
    handle = AsyncInterpolationSession(client.aio, {}, {"id": session_id, "stream_url": stream_url})
    return InterpolationStream(client, handle.stream())


# --- the Python client -----------------------------------------------------------------------


def test_a_client_with_its_key_interpolates_streams_and_runs_a_job(
    keyed: RunningServer, clip: Path, tmp_path: Path
) -> None:
    frames = panning_frames(3)
    with Client(keyed.url, api_key=KEY) as client:
        middle = client.interpolate(frames[0], frames[1], factor=2)
        assert len(middle) == 1 and middle[0].frame.shape == frames[0].shape
        session = client.create_interpolation_session(factor=2)
        try:
            with session.stream() as stream:  # the key goes on the websocket handshake
                results = list(stream.stream(frames))
            assert [len(r.frames) for r in results] == [0, 1, 1]
            assert session.info()["frames_done"] == 3
        finally:
            session.delete()
        job = client.submit_job(clip, "interpolate", factor=2)
        assert [j.id for j in client.jobs()] == [job.id]
        client.wait_job(job.id, poll_s=0.05, timeout=120)
        out = client.download_job(job.id, tmp_path / "smooth.mp4")
        assert probe(out).frames == 8
        client.cancel_job(job.id)
    assert httpx.get(f"{keyed.url}/v1/jobs", headers=auth(KEY)).json()["jobs"] == []


def test_the_async_client_takes_its_key_from_the_environment(
    keyed: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDSERVE_API_KEY", f"{KEY}\n")  # as `export VAR=$(cat key.txt)` may leave it
    frames = panning_frames(2)

    async def run() -> list[Any]:
        async with AsyncClient(keyed.url) as aio:
            session = await aio.create_interpolation_session(timesteps=[0.5])
            try:
                async with session.stream() as stream:
                    return [await stream.send(frame) for frame in frames]
            finally:
                await session.delete()

    first, second = asyncio.run(run())
    assert first.frames == [] and second.frames[0].source == (0, 1)


def test_without_a_key_or_with_a_wrong_one_the_client_is_told_so(
    keyed: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = panning_frames(2)
    with Client(keyed.url) as anonymous, Client(keyed.url, api_key=WRONG) as wrong:
        assert anonymous.health() == {"status": "ok"} and anonymous.ready()["ready"]  # probes stay open
        for client in (anonymous, wrong):
            started = time.monotonic()
            with pytest.raises(Unauthorized) as refused:
                client.create_interpolation_session()
            assert time.monotonic() - started < PROMPTLY_S  # a 401 is never retried
            assert refused.value.status == 401 and refused.value.code == "unauthorized"
            assert "api_key=" in str(refused.value) and "VIDSERVE_API_KEY" in str(refused.value)
            with pytest.raises(Unauthorized):
                client.interpolate(frames[0], frames[1])
        assert "not one this server knows" in refused.value.message and WRONG not in str(refused.value)

        created = httpx.post(f"{keyed.url}/v1/sessions", json={"task": "interpolate"}, headers=auth(KEY))
        session = created.json()
        try:
            for client in (anonymous, wrong):
                with pytest.raises(StreamUnauthorized) as closed:
                    stream_of(client, session["id"], session["stream_url"]).connect()
                assert isinstance(closed.value, StreamClosed) and isinstance(closed.value, Unauthorized)
                assert closed.value.code == 4401 and "API key" in closed.value.reason
            with Client(keyed.url, api_key=TIGHT) as other, pytest.raises(StreamNotFound):
                stream_of(other, session["id"], session["stream_url"]).connect()  # another key's: 4404
        finally:
            httpx.delete(f"{keyed.url}/v1/sessions/{session['id']}", headers=auth(KEY))

    monkeypatch.setenv("VIDSERVE_API_KEY", KEY)
    with Client(keyed.url, api_key="") as explicit, pytest.raises(Unauthorized):  # "": send none
        explicit.create_interpolation_session()
    with pytest.raises(ValueError) as unusable:
        Client(keyed.url, api_key="two words-0123456789")
    assert "two words" not in str(unusable.value)


def test_a_used_up_quota_is_raised_at_once_with_when_a_place_frees(keyed: RunningServer, clip: Path) -> None:
    """The server's Retry-After is minutes away, past the client's 30 s retry budget: the
    client raises QuotaExceeded naming the quota and the wait, instead of sleeping on it."""
    with Client(keyed.url, api_key=TIGHT) as client:
        first = client.create_interpolation_session()
        job = client.submit_job(clip, "interpolate")
        try:
            started = time.monotonic()
            with pytest.raises(QuotaExceeded) as sessions:
                client.create_interpolation_session()
            with pytest.raises(QuotaExceeded) as jobs:
                client.submit_job(clip, "interpolate")
            assert time.monotonic() - started < PROMPTLY_S
        finally:
            client.cancel_job(job.id)
            first.delete()
        assert client.create_interpolation_session().delete()["state"] == "closed"  # a place again
    for refused, quota in ((sessions.value, "max_sessions"), (jobs.value, "max_jobs")):
        assert isinstance(refused, Overloaded) and refused.status == 429 and refused.code == "quota_exceeded"
        assert refused.quota == quota and quota in str(refused)
        assert refused.retry_after_s is not None and refused.retry_after_s > 30
        assert f"Retry-After: {refused.retry_after_s:g} s" in str(refused)
        assert "retry budget of 30 s" in str(refused)
    assert sessions.value.retry_after_s is not None and TTL_S - 10 <= sessions.value.retry_after_s <= TTL_S


# --- the command line ------------------------------------------------------------------------


def test_the_cli_streams_with_its_key(keyed: RunningServer, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "double.mp4"
    done = cli("interpolate", clip, "--api-key", KEY, "--out", out, "--quiet", server=keyed.url)
    assert done.returncode == 0, done.stderr
    assert probe(out).frames == 8 and KEY not in done.stdout + done.stderr


def test_the_cli_without_the_right_key_says_so_in_one_line(
    keyed: RunningServer,
    clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "o.mp4"
    base = ["interpolate", str(clip), "--out", str(out), "--server", keyed.url, "--quiet"]
    cases = [
        (base, "needs an API key: give it with --api-key KEY or $VIDSERVE_API_KEY"),
        ([*base, "--api-key", WRONG], "refused the API key (the API key is not one this server knows)"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert WRONG not in err and KEY not in err
    monkeypatch.setenv("VIDSERVE_API_KEY", TIGHT)
    with Client(keyed.url) as client:  # the tight key's one session, held
        held = client.create_interpolation_session()
        try:
            assert main(base) == 1
        finally:
            held.delete()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quota is used up" in err and "max_sessions" in err, err
    assert "a place frees in about" in err and TIGHT not in err
    assert not out.exists()
    for command in ("interpolate", "segment", "embed"):  # every command takes the key
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert "--api-key" in shown and "$VIDSERVE_API_KEY" in shown and TIGHT not in shown


# --- the browser demo ------------------------------------------------------------------------


async def give_key(page: Page, key: str) -> None:
    """Type ``key`` into the password field and press the button, as a user does."""
    await page.click("#api-key")
    await page.call("Input.insertText", text=key)
    await page.click("#use-key")


def test_the_demo_asks_for_the_key_then_streams_with_it(
    keyed: RunningServer, chromium: Path, artifacts: Path, tmp_path: Path
) -> None:
    """The page's first /v1 call answers 401: it shows a password field; a wrong key is
    refused there; the right one is kept for the tab and sent on every fetch and, as
    ``bearer.KEY``, on the stream, which interpolates the file's frames."""
    video = pan_webm(tmp_path / "pan.webm", 6)

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with browser(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"{keyed.url}/demo")
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.needsKey")
            seen = await page.evaluate(
                "({auth: !document.querySelector('#auth').hidden,"
                " type: document.querySelector('#api-key').type,"
                " start: document.querySelector('#start').disabled})"
            )
            assert seen == {"auth": True, "type": "password", "start": True}
            await give_key(page, WRONG)
            await page.wait_for("document.querySelector('#auth-status').textContent.includes('refused')")
            await page.screenshot(artifacts / "api-key.png")
            await give_key(page, KEY)
            await page.wait_for("window.vidserveDemo.models && !window.vidserveDemo.needsKey")
            assert await page.evaluate("sessionStorage.getItem('vidserve-api-key')") == KEY
            await page.click('input[name="task"][value="interpolate"]')
            await page.set_files("#file", video)
            await page.wait_for("window.vidserveDemo.state === 'ready'")
            await page.evaluate("document.querySelector('#max-width').value = 128")
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'done'")
            demo = await page.evaluate("window.vidserveDemo")
            await page.screenshot(artifacts / "interpolate-keyed.png")
            session = httpx.get(f"{keyed.url}/v1/sessions/{demo['sessionId']}", headers=auth(KEY)).json()
            await page.click("#stop")
            await page.wait_for("window.vidserveDemo.state === 'stopped'")
            await page.call("Page.navigate", url=f"{keyed.url}/demo")  # the tab keeps its key
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.models")
            again = await page.evaluate("window.vidserveDemo")
            assert page.problems == [], page.problems
            return demo, session, again

    demo, session, again = asyncio.run(run())
    assert demo["errors"] == [] and demo["close"] is None, demo
    assert demo["keyStored"] and KEY not in json.dumps(demo)
    assert demo["framesSent"] >= 3 and demo["resultsReceived"] == demo["framesSent"] - 1, demo
    assert session["frames_done"] == demo["framesSent"] and session["frame_size"] == [HEIGHT, WIDTH]
    gone = httpx.get(f"{keyed.url}/v1/sessions/{demo['sessionId']}", headers=auth(KEY))
    assert gone.status_code == 410  # deleted by the page's Stop, with its key
    assert not again["needsKey"] and again["keyStored"]
