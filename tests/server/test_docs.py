"""The API docs pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), come whole from the
server (issue 15): in headless Chromium against a real server each renders every
operation, and neither requests nor links anything of another origin; over HTTP the
vendored assets answer with their types and caching, and are the manifest's files.

Chromium is driven as the browser demo's tests drive it (``tests/clients/test_web_demo.py``);
the page's network requests are read by a second DevTools client on the same tab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect

from server.api.docs import STATIC_DIR
from tests.clients.test_web_demo import Page, browser, chromium  # noqa: F401  (chromium: a fixture)
from tests.conftest import REPO_ROOT
from tests.server.support import RunningServer

TIMEOUT_S = 60.0
QUIET_S = 1.0  # why: ReDoc rendered its remote logo one effect after the menu; wait for such late loads

# every element of the page that names a URL, and that URL resolved against the page
NAMED_URLS = """[...document.querySelectorAll("[href], [src]")].map((element) => {
  const value = element.getAttribute("href") ?? element.getAttribute("src");
  return [element.tagName.toLowerCase(), new URL(value, location.href).href];
})"""
# Content-Security-Policy refusals, recorded from the page's first script on
RECORD_VIOLATIONS = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (event) => window.cspViolations.push(event.violatedDirective + " " + event.blockedURI));"""


def summaries(server: RunningServer) -> list[str]:
    document = httpx.get(f"{server.url}/openapi.json").json()
    return [o["summary"] for operations in document["paths"].values() for o in operations.values()]


def is_own(url: str, server: RunningServer) -> bool:
    """Whether a URL is this server's, or no network at all (data:, or a blob the page made)."""
    if url.startswith("data:"):
        return True
    parts = urlsplit(url.removeprefix("blob:"))
    return f"{parts.scheme}://{parts.netloc}" == server.url


@contextlib.asynccontextmanager
async def requests_seen(profile: Path) -> AsyncIterator[list[str]]:
    """Every URL the browser's tab requests, refused ones included (a CSP refusal still shows
    as a request), seen by a second DevTools client on the tab (Chromium takes several)."""
    port = int((profile / "DevToolsActivePort").read_text().split()[0])
    async with httpx.AsyncClient() as http:
        targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
    target = next(t for t in targets if t["type"] == "page")
    seen: list[str] = []
    async with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
        await ws.send(json.dumps({"id": 1, "method": "Network.enable"}))
        while json.loads(await ws.recv()).get("id") != 1:
            pass

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("method") == "Network.requestWillBeSent":
                    seen.append(message["params"]["request"]["url"])

        reader = asyncio.create_task(read())
        try:
            yield seen
        finally:
            reader.cancel()


async def until_quiet(seen: list[str]) -> None:
    """Until no request has started for ``QUIET_S``."""
    deadline = time.monotonic() + TIMEOUT_S
    count = -1
    while count != len(seen) and time.monotonic() < deadline:
        count = len(seen)
        await asyncio.sleep(QUIET_S)


async def open_docs(
    page: Page, profile: Path, url: str, wanted: list[str]
) -> tuple[list[str], list[list[str]], list[str]]:
    """Load ``url``, wait until every text of ``wanted`` is on the page and the network is
    quiet → the URLs requested, the URLs the final DOM names, and CSP refusals."""
    await page.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_VIOLATIONS)
    async with requests_seen(profile) as seen:
        await page.call("Page.navigate", url=url)
        await page.wait_for(
            f"document.body && {json.dumps(wanted)}.every((t) => document.body.textContent.includes(t))"
        )
        await until_quiet(seen)
        requested = list(seen)
    return requested, await page.evaluate(NAMED_URLS), await page.evaluate("window.cspViolations")


@pytest.mark.usefixtures("chromium")
@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_page_renders_the_api_from_the_server_alone(
    server: RunningServer, path: str, tmp_path: Path
) -> None:
    wanted = summaries(server)

    async def run() -> tuple[list[str], list[list[str]], list[str], list[str]]:
        profile = tmp_path / "profile"
        async with browser(profile) as page:
            requested, named, refused = await open_docs(page, profile, server.url + path, wanted)
            return requested, named, refused, page.problems

    requested, named, refused, problems = asyncio.run(run())
    assert "Interpolate between two frames" in wanted and problems == []
    assert f"{server.url}/openapi.json" in requested  # the page read the schema, from here
    assert [url for url in requested if not is_own(url, server)] == []
    assert [f"{tag} {url}" for tag, url in named if not is_own(url, server)] == []
    assert {tag for tag, _ in named} >= {"a", "link", "script"}  # the check saw the page's links
    assert refused == []  # nothing was refused either: the policy breaks nothing


ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}


def test_the_assets_answer_with_their_types_and_caching(server: RunningServer) -> None:
    for name, media_type in ASSETS.items():
        response = httpx.get(f"{server.url}/docs/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media_type, name
        assert response.headers["cache-control"] == "public, max-age=86400", name
        assert response.headers["x-content-type-options"] == "nosniff" and "etag" in response.headers
        assert response.content == (STATIC_DIR / name).read_bytes(), name


def test_a_missing_asset_is_a_json_404(server: RunningServer) -> None:
    escapes = ["..%2Fdocs.py", "%2E%2E%2F%2E%2E%2Fapp.py", "manifest.json", "redoc.LICENSE"]
    for name in ["nope.js", *escapes]:
        response = httpx.get(f"{server.url}/docs/static/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found", name


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_page_names_no_other_host(server: RunningServer, path: str) -> None:
    response = httpx.get(server.url + path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "cdn" not in response.text.lower() and "googleapis" not in response.text
    assert [u for u in re.findall(r"https?://[^\s\"'<>]+", response.text) if not is_own(u, server)] == []
    assert "/docs/static/" in response.text  # its assets are named by the server's own paths
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self' ") and "http" not in policy
    assert response.headers["cache-control"] == "no-cache"


def test_swagger_ui_has_no_validator_badge(server: RunningServer) -> None:
    assert '"validatorUrl": null' in httpx.get(f"{server.url}/docs").text


def test_the_pages_are_not_in_the_schema(server: RunningServer) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def test_the_vendored_files_are_the_manifests() -> None:
    """Offline: each file's sha256 is the one ``manifest.json`` records."""
    script = REPO_ROOT / "scripts" / "vendor_docs.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((STATIC_DIR / "manifest.json").read_text())
    assert set(ASSETS) <= set(manifest["files"])
    assert "API docs by Redocly" not in (STATIC_DIR / "redoc.standalone.js").read_text()
