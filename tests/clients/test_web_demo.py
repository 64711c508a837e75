"""The browser demo (clients/web/, served at /demo) in headless Chromium against real
servers: RIFE v4.0 (TorchScript on CPU) and XMem with the conformance recipe's hashed
weights, one uvicorn on a free port serving both; and, for the actions mode, a second one
serving VideoMAE vit-s on hashed weights.

Chromium is driven over the Chrome DevTools protocol with the ``websockets`` library (no
browser download, no extra dependency). A small VP8 WebM made with PyAV is given to the
page's file input; for segmentation a brush stroke per object is painted with real mouse
events first. Files the browser cannot play (an AVI of ``tests/data/videos``, an MP4 of a
video codec no browser decodes, a cut MP4) must be named with what it plays instead, and
tasks the server does not serve shown disabled with why. A screenshot of each run goes to
``artifacts/web-demo/`` (or ``$VIDSERVE_ARTIFACTS/web-demo/``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from clients.cli import build_parser
from models.videomae.config import get_config
from models.videomae.inference import WindowSpec
from models.videomae.labels import k400_labels
from server.app import create_app
from server.settings import Settings
from tests.conftest import REPO_ROOT
from tests.embed_support import EMBED_MODEL, SMALL_WINDOW, embed_settings
from tests.server.support import RunningServer, panning_frames, running_server
from tests.server.test_models import settings_without_xmem_weights, stalling_mirror
from tests.server.test_models import wait_for as wait_for_models
from tests.server.test_segmentation import xmem_settings

CHROMIUM = Path("/usr/bin/chromium")
VIDEOS = REPO_ROOT / "tests" / "data" / "videos"
CUP_FRAMES = 40  # cup_h264_aac.mp4's, as its README says
WIDTH, HEIGHT, FRAMES = 128, 96, 10
# why 30: a 4×2 window spans 7 frames and they start 8 apart, so even if the browser skips
# some presented frames the file gives the actions mode more than one window
CLIP_FRAMES = 30
TIMEOUT_S = 60.0
# what the brief found to work on a bare Debian machine, plus autoplay for the <video>
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--window-size=1280,1000",
    "--remote-debugging-port=0",
]


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does, as root)"
    if os.environ.get("VIDSERVE_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
        pytest.fail(f"VIDSERVE_REQUIRE_BROWSER=1 or CI is set, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo_server(
    chromium: Path, rife_v40_weights: Path, hashed_checkpoint: Path, engine_repository: Path
) -> Iterator[RunningServer]:
    """Both tasks on one server, as the README's two-model configuration runs them."""
    settings = xmem_settings(
        hashed_checkpoint,
        engine_repository,
        models=["rife-4.0", "xmem"],
        weights={"rife-4.0": rife_v40_weights, "xmem": hashed_checkpoint},
    )
    with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def actions_server(
    chromium: Path, videomae_checkpoint: Path, engine_repository: Path
) -> Iterator[RunningServer]:
    """The clip encoder alone: the page offers its actions mode and nothing else."""
    with running_server(embed_settings(videomae_checkpoint, engine_repository)) as running:
        yield running


def pan_webm(path: Path, frames: int) -> Path:
    """A slow pan, VP8 in WebM at 10 fps: Debian's Chromium plays it (it may lack H.264)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"deadline": "realtime", "b": "400k"}
        for pixels in panning_frames(frames, height=HEIGHT, width=WIDTH, step=3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pan_webm(tmp_path_factory.mktemp("web_demo_video") / "pan.webm", FRAMES)


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pan_webm(tmp_path_factory.mktemp("web_demo_video") / "clip.webm", CLIP_FRAMES)


@pytest.fixture(scope="module")
def mpeg4_with_sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MPEG-4 Part 2 video, which no browser decodes, with AAC sound, which Chromium plays: the
    file loads as sound alone, a video of no pictures (what an HEVC MP4 is to many browsers)."""
    path = tmp_path_factory.mktemp("web_demo_video") / "mpeg4_with_sound.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        for pixels in panning_frames(FRAMES, height=HEIGHT, width=WIDTH, step=3):
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode(None))
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 44100), np.float32), format="fltp", layout="mono")
        silence.sample_rate = 44100
        container.mux(audio.encode(silence))
        container.mux(audio.encode(None))
    return path


def cut_copy(source: Path, path: Path, size: int) -> Path:
    """The first ``size`` bytes of ``source``: a download broken off."""
    path.write_bytes(source.read_bytes()[:size])
    return path


@pytest.fixture()
def artifacts() -> Path:
    root = os.environ.get("VIDSERVE_ARTIFACTS") or REPO_ROOT / "artifacts"
    path = Path(root) / "web-demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- a small DevTools client ------------------------------------------------------------------


class Page:
    """One browser tab over the DevTools protocol: commands, and the page's console kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.problems: list[str] = []  # uncaught exceptions and console.error lines
        self.console: list[str] = []
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                future = self.waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.problems.append(f"uncaught: {details.get('exception', {}).get('description', details)}")
            elif message.get("method") == "Runtime.consoleAPICalled":
                params = message["params"]
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                self.console.append(f"{params['type']}: {text}")
                if params["type"] == "error":
                    self.problems.append(f"console.error: {text}")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        await self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, TIMEOUT_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.05)
        state = await self.evaluate("JSON.stringify(window.vidserveDemo)")
        raise AssertionError(f"not true in {timeout} s: {expression}\npage state: {state}\n{self.console}")

    async def centre(self, selector: str) -> tuple[float, float]:
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; })()"
        )
        return box[0] + box[2] / 2, box[1] + box[3] / 2

    async def mouse(self, kind: str, x: float, y: float) -> None:
        buttons = 0 if kind == "mouseReleased" else 1
        await self.call(
            "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1
        )

    async def click(self, selector: str) -> None:
        """A real click (mouse down and up at the element's centre), as a user makes it."""
        x, y = await self.centre(selector)
        await self.mouse("mousePressed", x, y)
        await self.mouse("mouseReleased", x, y)

    async def drag(self, selector: str, points: list[tuple[float, float]]) -> None:
        """A stroke through ``points``, given as fractions of the element's box."""
        left, top, width, height = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; })()"
        )
        at = [(left + fx * width, top + fy * height) for fx, fy in points]
        await self.mouse("mousePressed", *at[0])
        for x, y in at[1:]:
            await self.mouse("mouseMoved", x, y)
        await self.mouse("mouseReleased", *at[-1])

    async def set_files(self, selector: str, *paths: Path) -> None:
        root = await self.call("DOM.getDocument", depth=0)
        node = await self.call("DOM.querySelector", nodeId=root["root"]["nodeId"], selector=selector)
        await self.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(p) for p in paths])

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Page]:
    """Headless Chromium with a fresh profile, and its first tab."""
    process = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = await _devtools_port(profile, process)
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        target = next(t for t in targets if t["type"] == "page")
        async with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "DOM"):
                await page.call(f"{domain}.enable")
            try:
                yield page
            finally:
                page.reader.cancel()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it picked (``--remote-debugging-port=0``) into the profile."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} at start")
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port in 30 s")


# --- the runs ---------------------------------------------------------------------------------


# pixels of a canvas that are drawn (opaque); the page paints on the video's first frame
OPAQUE_PIXELS = """(() => {{
  const canvas = document.querySelector("{selector}");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0;
  for (let i = 3; i < data.length; i += 4) opaque += data[i] === 255 ? 1 : 0;
  return opaque;
}})()"""
# the tasks the page offers (those the server serves), in page order
OFFERED_TASKS = """[...document.querySelectorAll('input[name="task"]')]
  .filter((radio) => !radio.disabled).map((radio) => radio.value)"""
# each task's reason shown beside it ("" for one offered), by task
SHOWN_REASONS = """Object.fromEntries([...document.querySelectorAll('input[name="task"]')]
  .map((radio) => [radio.value, radio.closest("label").querySelector(".reason").textContent]))"""


async def open_demo(page: Page, server: RunningServer, task: str, video: Path) -> None:
    await page.call("Page.navigate", url=f"{server.url}/demo")
    await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
    await page.click(f'input[name="task"][value="{task}"]')
    await page.set_files("#file", video)
    await page.wait_for("window.vidserveDemo.state === 'ready'")


def server_session(server: RunningServer, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    return session


# the media time of each frame the page sends, read off its websocket: what the server gets
WATCH_SENT = """window.sentPts = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  const header = typeof data === "string" ? JSON.parse(data) : null;
  if (header?.type === "frame") window.sentPts.push(header.pts);
  return send.call(this, data);
};
true"""


def frame_times(path: Path) -> list[float]:
    """Each frame's presentation time in seconds, as decoded by FFmpeg."""
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0) if frame.time is not None]


def check_sent_in_order(sent: list[float], times: list[float]) -> None:
    """Frames of the file, each once, in order, from its first two. Why the second: it was
    lost when the first frame's answer played the file on before the page watched its frames.
    Why not every frame: a browser too busy to render in time shows frames it calls the page
    for none of (requestVideoFrameCallback runs at most once per rendering step)."""
    assert len(sent) >= 3 and sent[:2] == pytest.approx(times[:2], abs=1e-3), (sent, times)
    assert sent == sorted(set(sent)), sent
    assert all(min(abs(time - pts) for time in times) < 1e-3 for pts in sent), (sent, times)


async def stop_and_check_closed(page: Page, server: RunningServer, session_id: str) -> None:
    await page.click("#stop")
    await page.wait_for("window.vidserveDemo.state === 'stopped'")
    assert httpx.get(f"{server.url}/v1/sessions/{session_id}").status_code == 410  # deleted by the page


def test_interpolation_from_a_video_file(
    demo_server: RunningServer, video: Path, artifacts: Path, tmp_path: Path
) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any], list[float], list[str]]:
        async with browser(tmp_path / "profile") as page:
            await open_demo(page, demo_server, "interpolate", video)
            assert await page.evaluate(OFFERED_TASKS) == ["interpolate", "segment"]  # no embed model
            reasons = await page.evaluate(SHOWN_REASONS)
            assert reasons == {
                "interpolate": "",
                "segment": "",
                "embed": "this server serves no clip encoder model",
            }
            await page.evaluate("document.querySelector('#max-width').value = 128")
            await page.evaluate(WATCH_SENT)
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'done'")
            demo = await page.evaluate("window.vidserveDemo")
            sent = await page.evaluate("window.sentPts")
            await page.screenshot(artifacts / "interpolate.png")
            session = server_session(demo_server, demo["sessionId"])
            await stop_and_check_closed(page, demo_server, demo["sessionId"])
            return demo, session, sent, page.problems

    demo, session, sent, problems = asyncio.run(run())
    assert demo["errors"] == [] and problems == [], (demo["errors"], problems)
    check_sent_in_order(sent, frame_times(video))
    assert demo["framesSent"] == len(sent), demo
    assert session["frames_in"] == session["frames_done"] == demo["framesSent"] == demo["framesAnswered"]
    assert session["frames_failed"] == session["dropped"] == 0
    # factor 2: one in-between frame for each frame after the first, each shown by the page
    assert demo["resultsReceived"] == session["outputs"] == demo["framesSent"] - 1 > 0
    # a slow pan has no cut: every frame sent was a real picture, the first one included
    assert session["frame_size"] == [HEIGHT, WIDTH] and session["scene_changes"] == 0
    assert demo["lastServerMs"] > 0 and demo["lastRttMs"] >= demo["lastServerMs"]


def test_segmentation_with_a_painted_mask(
    demo_server: RunningServer, video: Path, artifacts: Path, tmp_path: Path
) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        async with browser(tmp_path / "profile") as page:
            await open_demo(page, demo_server, "segment", video)
            # processed as given (96 px high), not resized to XMem's 480: keeps the test fast
            await page.evaluate("document.querySelector('#processing-size').value = ''")
            assert await page.evaluate(OPAQUE_PIXELS.format(selector="#paint")) == WIDTH * HEIGHT
            await page.click('#objects button[data-object="1"]')
            await page.drag("#paint", [(0.15, 0.3), (0.3, 0.5), (0.35, 0.7)])
            await page.click('#objects button[data-object="2"]')
            await page.drag("#paint", [(0.7, 0.2), (0.8, 0.4), (0.75, 0.6)])
            assert await page.evaluate("window.vidserveDemo.paintedObjects") == [1, 2]
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'done'")
            demo = await page.evaluate("window.vidserveDemo")
            await page.screenshot(artifacts / "segment.png")
            session = server_session(demo_server, demo["sessionId"])
            await stop_and_check_closed(page, demo_server, demo["sessionId"])
            return demo, session, page.problems

    demo, session, problems = asyncio.run(run())
    assert demo["errors"] == [] and problems == [], (demo["errors"], problems)
    assert demo["framesSent"] >= 3, demo
    # one mask per frame, each decoded from its index PNG and drawn over its frame
    assert session["frames_in"] == session["frames_done"] == demo["framesSent"] == demo["resultsReceived"]
    assert session["frames_failed"] == session["dropped"] == 0
    assert session["objects"] == [1, 2] and session["frame_size"] == [HEIGHT, WIDTH]
    # the first frame's mask is the painted one, so both objects were overlaid at least there
    assert demo["objectsSeen"] == [1, 2] and demo["overlaidFrames"] >= 1, demo


def test_interpolation_from_the_webcam(demo_server: RunningServer, artifacts: Path, tmp_path: Path) -> None:
    """Chromium's fake camera (--use-fake-device-for-media-stream) through getUserMedia: live
    frames until Stop, which lets the frames in flight finish before it closes the session."""

    async def run() -> tuple[dict[str, Any], list[str]]:
        async with browser(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"{demo_server.url}/demo")
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
            await page.evaluate("document.querySelector('#max-width').value = 128")
            await page.click("#camera")
            await page.wait_for("window.vidserveDemo.state === 'ready'")
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.resultsReceived >= 3")
            await page.screenshot(artifacts / "interpolate-webcam.png")
            await page.click("#stop")
            await page.wait_for("window.vidserveDemo.state === 'stopped'")
            demo = await page.evaluate("window.vidserveDemo")
            assert httpx.get(f"{demo_server.url}/v1/sessions/{demo['sessionId']}").status_code == 410
            return demo, page.problems

    demo, problems = asyncio.run(run())
    assert demo["errors"] == [] and problems == [], (demo["errors"], problems)
    session = demo["server"]  # what GET /v1/sessions/{id} said after the last answer, before DELETE
    assert session["frames_in"] == session["frames_done"] == demo["framesSent"] == demo["framesAnswered"]
    assert session["frames_failed"] == session["dropped"] == session["in_flight"] == 0
    assert session["outputs"] == demo["resultsReceived"] >= 3
    assert session["frame_size"] == [96, 128]  # the fake camera's 640×480, scaled to 128 wide


def test_a_refused_session_is_shown(demo_server: RunningServer, video: Path, tmp_path: Path) -> None:
    """The server's error reaches the user: a factor over 64 is a 422 naming the field."""

    async def run() -> tuple[dict[str, Any], str, list[str]]:
        async with browser(tmp_path / "profile") as page:
            await open_demo(page, demo_server, "interpolate", video)
            await page.evaluate("document.querySelector('#factor').value = 99")
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'error'")
            shown = await page.evaluate("document.querySelector('#errors').textContent")
            return await page.evaluate("window.vidserveDemo"), shown, page.problems

    demo, shown, problems = asyncio.run(run())
    assert problems == [] and demo["framesSent"] == 0 and demo["sessionId"] is None
    assert demo["lastError"].startswith("422 invalid_request") and "factor" in demo["lastError"], demo
    assert demo["lastError"] in shown


# --- files the browser cannot play -----------------------------------------------------------

H264 = 'video/mp4; codecs="avc1.42E01E"'
# what the page shows once it has given up on a file
REFUSAL = """({demo: window.vidserveDemo, shown: document.querySelector("#errors").textContent,
  besideFile: document.querySelector("#source-error").textContent,
  startDisabled: document.querySelector("#start").disabled})"""


async def can_play(page: Page, mime: str) -> bool:
    """The browser's own answer (canPlayType), apart from the page's."""
    answer = await page.evaluate(f"document.createElement('video').canPlayType({json.dumps(mime)})")
    return answer != ""


async def refused_file(
    page: Page, server: RunningServer, path: Path, task: str = "interpolate"
) -> dict[str, Any]:
    """Choose ``path`` for ``task`` on a freshly opened page; what it shows once it gives up."""
    await page.call("Page.navigate", url=f"{server.url}/demo")
    await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
    await page.click(f'input[name="task"][value="{task}"]')
    await page.set_files("#file", path)
    await page.wait_for("window.vidserveDemo.state === 'error'")
    refusal: dict[str, Any] = await page.evaluate(REFUSAL)
    return refusal


def check_refused(refusal: dict[str, Any], name: str) -> str:
    """An error, not a silent idle: it names the file and lists what the browser plays; Start
    stays off and nothing was sent. Returns the message."""
    demo = refusal["demo"]
    assert demo["state"] == "error" and refusal["startDisabled"], refusal
    assert demo["framesSent"] == 0 and demo["sessionId"] is None
    message: str = demo["lastError"]
    assert message.startswith(f'cannot play "{name}": ') and message in refusal["shown"], message
    assert refusal["besideFile"] == message
    formats = demo["playableFormats"]
    assert "WebM (VP8)" in formats  # the suite's own videos, which this browser plays
    assert f"This browser plays {', '.join(formats)}." in message
    return message


def suggested_command(message: str) -> Any:
    """The command-line client's command the message gives, parsed by the CLI itself."""
    argv = shlex.split(message.split("The command-line client decodes with FFmpeg: ", 1)[1])
    assert argv[:3] == ["python", "-m", "clients"], argv
    return build_parser().parse_args(argv[3:])


def test_a_video_the_browser_cannot_decode_is_named(
    demo_server: RunningServer, mpeg4_with_sound: Path, tmp_path: Path
) -> None:
    """Its sound loads, its pictures do not: the page says so, with the formats this browser
    plays (only those it answers for) and the CLI command, instead of streaming no picture."""

    async def run() -> tuple[dict[str, Any], bool, list[str]]:
        async with browser(tmp_path / "profile") as page:
            refusal = await refused_file(page, demo_server, mpeg4_with_sound)
            theora = await can_play(page, 'video/ogg; codecs="theora"')
            return refusal, theora, page.problems

    refusal, theora, problems = asyncio.run(run())
    assert problems == [], problems
    message = check_refused(refusal, mpeg4_with_sound.name)
    assert "this browser decodes no video track in it" in message, message
    assert ("Ogg (Theora)" in refusal["demo"]["playableFormats"]) == theora
    args = suggested_command(message)
    assert (args.command, args.video, args.server) == (
        "interpolate",
        Path(mpeg4_with_sound.name),
        demo_server.url,
    )


def test_an_avi_is_named_with_the_command_line_client(
    demo_server: RunningServer, artifacts: Path, tmp_path: Path
) -> None:
    """No browser plays AVI: the page says so and gives the CLI command for the task chosen."""

    async def run() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        async with browser(tmp_path / "profile") as page:
            bframes = await refused_file(page, demo_server, VIDEOS / "megamind_bframes.avi")
            vfr = await refused_file(page, demo_server, VIDEOS / "tree_vfr.avi", task="segment")
            await page.screenshot(artifacts / "unplayable-avi.png")
            return bframes, vfr, page.problems

    bframes, vfr, problems = asyncio.run(run())
    assert problems == [], problems
    for refusal, name, task in (
        (bframes, "megamind_bframes.avi", "interpolate"),
        (vfr, "tree_vfr.avi", "segment"),
    ):
        message = check_refused(refusal, name)
        assert "browsers cannot play AVI files" in message, message
        args = suggested_command(message)
        assert (args.command, args.video, args.server) == (task, Path(name), demo_server.url)
    assert suggested_command(vfr["demo"]["lastError"]).mask == Path("FIRST_FRAME_MASK.png")


def test_a_cut_mp4_is_an_error_and_the_next_file_plays(
    demo_server: RunningServer, video: Path, tmp_path: Path
) -> None:
    """Issue 15: a cut download (cup_h264_aac.mp4's index and a few of its frames) left the
    page "idle", Start off, saying nothing: its first frame loads, then decoding fails (a
    browser without H.264 refuses it at once). Now it is an error naming the file, and the
    next file chosen plays and streams every frame."""
    cut = cut_copy(VIDEOS / "cup_h264_aac.mp4", tmp_path / "cup_cut.mp4", 6000)

    async def run() -> tuple[dict[str, Any], bool, dict[str, Any], dict[str, Any], list[str]]:
        async with browser(tmp_path / "profile") as page:
            refusal = await refused_file(page, demo_server, cut)
            await page.set_files("#file", video)
            await page.wait_for("window.vidserveDemo.state === 'ready'")
            startable = await page.evaluate(
                "!document.querySelector('#start').disabled && document.querySelector('#source-error').hidden"
            )
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'done'")
            demo = await page.evaluate("window.vidserveDemo")
            session = server_session(demo_server, demo["sessionId"])
            await stop_and_check_closed(page, demo_server, demo["sessionId"])
            return refusal, startable, demo, session, page.problems

    refusal, startable, demo, session, problems = asyncio.run(run())
    assert problems == [], problems
    message = check_refused(refusal, "cup_cut.mp4")
    assert "decoding it failed" in message or "cannot open its container or codecs" in message, message
    assert startable and demo["errors"] == [], demo
    assert session["frames_in"] == session["frames_done"] == demo["framesSent"] == FRAMES


async def skip_without_h264(page: Page) -> str | None:
    """Why an H.264 test cannot run in this browser, or None (Debian's Chromium 156 decodes it)."""
    return None if await can_play(page, H264) else "this Chromium decodes no H.264"


def test_an_h264_mp4_sends_every_frame(demo_server: RunningServer, tmp_path: Path) -> None:
    """cup_h264_aac.mp4 where the browser decodes H.264 (Debian's Chromium 156 does) plays
    and streams: its frames in order, each once, from its first two."""
    cup = VIDEOS / "cup_h264_aac.mp4"

    async def run() -> tuple[str | None, dict[str, Any], dict[str, Any], list[float], list[str]]:
        async with browser(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"{demo_server.url}/demo")
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
            if skipped := await skip_without_h264(page):
                return skipped, {}, {}, [], []
            await page.evaluate("document.querySelector('#max-width').value = 128")
            await page.set_files("#file", cup)
            await page.wait_for("window.vidserveDemo.state === 'ready'")
            await page.evaluate(WATCH_SENT)
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'done'")
            demo = await page.evaluate("window.vidserveDemo")
            session = server_session(demo_server, demo["sessionId"])
            await stop_and_check_closed(page, demo_server, demo["sessionId"])
            return None, demo, session, await page.evaluate("window.sentPts"), page.problems

    skipped, demo, session, sent, problems = asyncio.run(run())
    if skipped:
        pytest.skip(skipped)
    assert demo["errors"] == [] and problems == [], (demo["errors"], problems)
    times = frame_times(cup)
    assert len(times) == CUP_FRAMES
    check_sent_in_order(sent, times)
    assert session["frames_in"] == session["frames_done"] == demo["framesSent"] == len(sent)
    assert demo["resultsReceived"] == session["outputs"] == demo["framesSent"] - 1
    assert session["frame_size"][1] == 128


def test_a_file_that_stops_decoding_ends_the_run_in_an_error(
    demo_server: RunningServer, tmp_path: Path
) -> None:
    """cup_h264_aac.mp4 cut at 60 %: its index promises frames the file lacks, so decoding
    fails part-way. The frames sent are answered, the session closed, and the page says
    where it stopped, instead of "streaming" for ever."""
    whole = VIDEOS / "cup_h264_aac.mp4"
    cut = cut_copy(whole, tmp_path / "cup_60.mp4", whole.stat().st_size * 6 // 10)

    async def run() -> tuple[str | None, dict[str, Any], list[str]]:
        async with browser(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"{demo_server.url}/demo")
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
            if skipped := await skip_without_h264(page):
                return skipped, {}, []
            await page.evaluate("document.querySelector('#max-width').value = 128")
            await page.set_files("#file", cut)
            await page.wait_for("window.vidserveDemo.state === 'ready'")
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'error'")
            refusal: dict[str, Any] = await page.evaluate(REFUSAL)
            return None, refusal, page.problems

    skipped, refusal, problems = asyncio.run(run())
    if skipped:
        pytest.skip(skipped)
    assert problems == [], problems
    demo = refusal["demo"]
    assert refusal["startDisabled"] and demo["errors"] == [demo["lastError"]] == [refusal["besideFile"]], demo
    assert demo["lastError"].startswith("source: decoding it failed") and demo["lastError"].endswith(
        " s into the file"
    )
    assert 0 < demo["framesSent"] < CUP_FRAMES, demo
    # every frame sent was answered, as the server counted before the page closed the session
    assert demo["server"]["frames_done"] == demo["framesAnswered"] == demo["framesSent"], demo
    assert httpx.get(f"{demo_server.url}/v1/sessions/{demo['sessionId']}").status_code == 410


def set_fields(values: Mapping[str, object]) -> str:
    """An expression that sets form fields by selector, as a user typing them would."""
    return ";".join(
        f"document.querySelector({json.dumps(k)}).value = {json.dumps(v)}" for k, v in values.items()
    )


# the suite's small window (4 frames, every 2nd) at the default stride (windows side by side,
# 7 frames each, one every 8), half of its tokens run, those that changed most
ACTIONS = WindowSpec(
    SMALL_WINDOW["frames_per_clip"], SMALL_WINDOW["sampling_rate"], keep_ratio=0.5, drop="static"
)
ACTIONS_FIELDS = {
    "#max-width": 128,
    "#frames-per-clip": ACTIONS.frames_per_clip,
    "#sampling-rate": ACTIONS.sampling_rate,
    "#keep-ratio": ACTIONS.keep_ratio,
    "#drop": ACTIONS.drop,
}
SHOWN_LABELS = """[...document.querySelectorAll("#labels li")]
  .map((li) => [li.querySelector(".label").textContent, li.querySelector(".score").textContent])"""


def test_actions_from_a_video_file(
    actions_server: RunningServer, clip_video: Path, artifacts: Path, tmp_path: Path
) -> None:
    """Windows of 4 frames (every 2nd) with half their tokens run: the last window's top
    labels, from the server's real window, are the bars on the page, which follow the
    windows as they come."""

    async def run() -> tuple[list[str], dict[str, Any], dict[str, Any], list[list[str]], str, list[str]]:
        async with browser(tmp_path / "profile") as page:
            await open_demo(page, actions_server, "embed", clip_video)
            offered = await page.evaluate(OFFERED_TASKS)
            await page.evaluate(set_fields(ACTIONS_FIELDS))
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'done'")
            demo = await page.evaluate("window.vidserveDemo")
            shown = await page.evaluate(SHOWN_LABELS)
            info = await page.evaluate("document.querySelector('#window-info').textContent")
            await page.screenshot(artifacts / "actions.png")
            session = server_session(actions_server, demo["sessionId"])
            await stop_and_check_closed(page, actions_server, demo["sessionId"])
            return offered, demo, session, shown, info, page.problems

    offered, demo, session, shown, info, problems = asyncio.run(run())
    assert demo["errors"] == [] and problems == [], (demo["errors"], problems)
    assert offered == ["embed"] and session["model"] == EMBED_MODEL
    assert session["frames_in"] == session["frames_done"] == demo["framesSent"] == demo["framesAnswered"]
    assert session["frames_failed"] == session["dropped"] == 0
    spec = ACTIONS
    asked = (spec.frames_per_clip, spec.sampling_rate, spec.keep_ratio, spec.drop)
    assert (
        session["frames_per_clip"],
        session["sampling_rate"],
        session["keep_ratio"],
        session["drop"],
    ) == asked
    assert session["window_frames"] == spec.span and session["stride"] == spec.step
    # every frame the page sent stepped the stream, and each window it completed was shown
    assert demo["resultsReceived"] == session["windows"] == spec.windows_in(session["frames_in"]) >= 2, demo
    window = demo["lastWindow"]
    assert window["window"] == session["windows"] - 1
    assert window["end_frame"] == spec.span - 1 + spec.step * window["window"]
    assert window["start_frame"] == window["end_frame"] - (spec.span - 1)
    assert window["end_pts"] > window["pts"] > 0 and window["dims"] == get_config("vit-s").width
    # half of each slice's tokens ran, in every window
    assert window["tokens"] == spec.kept(get_config("vit-s")) < window["tokens_total"]
    assert session["tokens_run"] == window["tokens"] * session["windows"]
    # the top labels of the last window, best first, each a Kinetics-400 name, as bars
    labels = window["labels"]
    assert len(labels) == session["top_k"] == 5
    assert {label["label"] for label in labels} <= set(k400_labels())
    assert [label["score"] for label in labels] == sorted((label["score"] for label in labels), reverse=True)
    assert shown == [[label["label"], f"{100 * label['score']:.1f}%"] for label in labels]
    assert f"frames {window['start_frame']}–{window['end_frame']}" in info
    assert f"{window['tokens']} of {window['tokens_total']} tokens ran" in info


def test_a_refused_actions_session_is_shown(
    actions_server: RunningServer, clip_video: Path, tmp_path: Path
) -> None:
    """An odd frames_per_clip cannot be cut into tubelets: the server's 422 reaches the user."""

    async def run() -> tuple[dict[str, Any], str, list[str]]:
        async with browser(tmp_path / "profile") as page:
            await open_demo(page, actions_server, "embed", clip_video)
            await page.evaluate(set_fields({**ACTIONS_FIELDS, "#frames-per-clip": 5}))
            await page.click("#start")
            await page.wait_for("window.vidserveDemo.state === 'error'")
            shown = await page.evaluate("document.querySelector('#errors').textContent")
            return await page.evaluate("window.vidserveDemo"), shown, page.problems

    demo, shown, problems = asyncio.run(run())
    assert problems == [] and demo["framesSent"] == 0 and demo["sessionId"] is None
    assert demo["lastError"] == "422 invalid_argument: frames_per_clip must be even, 2 to 64; got 5", demo
    assert demo["lastError"] in shown


# --- tasks the server does not serve ----------------------------------------------------------

CHECKED_TASK = "document.querySelector('input[name=\"task\"]:checked').value"


def test_tasks_the_server_does_not_serve_are_shown_disabled(
    actions_server: RunningServer, tmp_path: Path
) -> None:
    """A server of the clip encoder alone: interpolation and segmentation stay in view,
    disabled, each with why; a click on one chooses nothing."""

    async def run() -> tuple[list[str], dict[str, str], str, dict[str, Any], list[str]]:
        async with browser(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"{actions_server.url}/demo")
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
            await page.click('input[name="task"][value="segment"]')
            offered = await page.evaluate(OFFERED_TASKS)
            reasons = await page.evaluate(SHOWN_REASONS)
            return (
                offered,
                reasons,
                await page.evaluate(CHECKED_TASK),
                await page.evaluate("window.vidserveDemo.tasks"),
                page.problems,
            )

    offered, reasons, checked, tasks, problems = asyncio.run(run())
    assert problems == [], problems
    assert offered == ["embed"] and checked == "embed"
    assert reasons == {
        "interpolate": "this server serves no interpolation model",
        "segment": "this server serves no segmentation model",
        "embed": "",
    }
    assert tasks == {
        "interpolate": {"offered": False, "reason": reasons["interpolate"]},
        "segment": {"offered": False, "reason": reasons["segment"]},
        "embed": {"offered": True, "reason": None},
    }


def test_a_model_loading_then_failed_is_the_reason_shown(
    chromium: Path,
    rife_v40_weights: Path,
    engine_repository: Path,
    video: Path,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    """XMem's weights download hangs, then breaks off; RIFE is served all along. The page
    offers interpolation at once, shows segmentation disabled with XMem's state, then with
    its failure and what to do; a file chosen meanwhile can start."""
    page_state = f"({{offered: {OFFERED_TASKS}, reasons: {SHOWN_REASONS},"
    page_state += " ready: document.querySelector('#ready').textContent})"

    async def run(
        server: RunningServer, release: threading.Event
    ) -> tuple[dict[str, Any], dict[str, Any], bool, list[str]]:
        async with browser(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"{server.url}/demo")
            await page.wait_for("window.vidserveDemo && window.vidserveDemo.serverReady")
            loading = await page.evaluate(page_state)
            release.set()  # the download breaks off
            await page.wait_for("window.vidserveDemo.tasks.segment.reason.includes('failed')", timeout=120)
            failed = await page.evaluate(page_state)
            await page.screenshot(artifacts / "model-failed.png")
            await page.set_files("#file", video)
            await page.wait_for("window.vidserveDemo.state === 'ready'")
            startable = await page.evaluate("!document.querySelector('#start').disabled")
            return loading, failed, startable, page.problems

    with stalling_mirror() as (mirror, release):
        models = ["rife-4.0", "xmem"]
        settings = settings_without_xmem_weights(
            rife_v40_weights, engine_repository, tmp_path / "cache", mirror, models
        )
        with running_server(settings, wait_ready=False) as server:
            wait_for_models(server, {"rife-4.0": "ready", "xmem": "loading"})
            loading, failed, startable, problems = asyncio.run(run(server, release))
    assert problems == [], problems
    assert loading["offered"] == failed["offered"] == ["interpolate"]
    assert loading["reasons"]["segment"] == "xmem is loading" and loading["ready"].startswith(
        "serving rife-4.0; "
    )
    reason = failed["reasons"]["segment"]
    assert reason.startswith("xmem failed to load: ") and "python -m models fetch xmem" in reason, reason
    assert failed["reasons"]["embed"] == "this server serves no clip encoder model"
    assert startable


def test_demo_files_are_served_and_nothing_else() -> None:
    """The page and its modules, with types a browser accepts for module scripts; no path
    from the URL reaches the disk. (In process and without the lifespan: static routes need
    no engine.)"""

    async def run() -> None:
        transport = httpx.ASGITransport(app=create_app(Settings(models=["rife-4.0"])))
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            redirect = await client.get("/demo")
            assert redirect.status_code == 307 and redirect.headers["location"] == "/demo/"
            page = await client.get("/demo/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert '<script type="module" src="main.js">' in page.text
            for name in (
                "main.js",
                "protocol.js",
                "masks.js",
                "painter.js",
                "source.js",
                "actions.js",
                "formats.js",
            ):
                module = await client.get(f"/demo/{name}")
                assert module.status_code == 200
                assert module.headers["content-type"].startswith("text/javascript")
            assert (await client.get("/demo/style.css")).headers["content-type"].startswith("text/css")
            escapes = ("/demo/..%2Fpyproject.toml", "/demo/%2E%2E%2F%2E%2E%2Fserver%2Fapp.py")
            for bad in ("/demo/nope.js", "/demo/.hidden.js", *escapes):
                response = await client.get(bad)
                assert response.status_code == 404, bad
                assert response.json()["error"]["code"] == "not_found", bad

    asyncio.run(run())
