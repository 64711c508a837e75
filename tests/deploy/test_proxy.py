"""The replicas' proxy, deploy/nginx/vidserve.conf, run by the real nginx binary in front of two
small loopback backends (HTTP and websocket, written here), and the compose profile that runs
it: sessions routed by a consistent hash of their id, everything else round-robin, websockets
proxied, and a replica that is down or draining (503) passed over for the next one."""

from __future__ import annotations

import grp
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server.settings import Settings
from tests.conftest import REPO_ROOT
from tests.server.support import free_port

NGINX_CONF = REPO_ROOT / "deploy" / "nginx" / "vidserve.conf"
COMPOSE = REPO_ROOT / "docker-compose.yml"
REPLICAS = ("vidserve-1", "vidserve-2")  # the compose services the committed file names
REPLICA_PORT = 8000
PROXY_PORT = 8080
# The lines render_config substitutes: a replica's address on an upstream `server` line, and
# the `listen` line (comments that mention them are left alone).
SERVER_LINE = re.compile(r"^(\s*server\s+)(vidserve-\d+):8000(?=\s)", re.MULTILINE)
LISTEN_LINE = re.compile(r"^(\s*listen\s+)8080;", re.MULTILINE)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def render_config(text: str, listen: str, replicas: dict[str, str]) -> str:
    """The committed file with each replica's address (``{"vidserve-1": "127.0.0.1:PORT"}``) on
    its ``server`` lines and ``listen`` on the listen line: a plain text substitution."""
    names = {name for _, name in SERVER_LINE.findall(text)}
    assert names == set(replicas), f"the file names {sorted(names)}, not {sorted(replicas)}"
    text, servers = SERVER_LINE.subn(lambda m: f"{m[1]}{replicas[m[2]]}", text)
    text, listens = LISTEN_LINE.subn(lambda m: f"{m[1]}{listen};", text)
    assert servers == 2 * len(replicas) and listens == 1, (servers, listens)  # two upstreams, one server
    return text


def upstream_servers(text: str) -> dict[str, list[str]]:
    """Each upstream block's name and the addresses of its ``server`` lines, in order."""
    blocks = re.findall(r"^upstream\s+(\w+)\s*\{(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    return {name: re.findall(r"^\s*server\s+(\S+)", body, re.MULTILINE) for name, body in blocks}


# --- nginx, as whatever user the tests run as ---------------------------------------------------


def nginx_binary() -> Path:
    """Debian's nginx (/usr/sbin is often off a non-root user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return Path(found)
    reason = "the nginx binary is missing: install Debian's nginx (scripts/test.sh does, as root)"
    if os.environ.get("VIDSERVE_REQUIRE_PROXY") == "1" or os.environ.get("CI"):
        pytest.fail(f"VIDSERVE_REQUIRE_PROXY=1 or CI is set, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def nginx() -> Path:
    return nginx_binary()


def main_config(root: Path, include: Path) -> Path:
    """A whole nginx.conf around the include, with every path nginx writes inside ``root``, so
    it runs without root and leaves nothing behind."""
    # why a user line only as root: root's workers would switch to the compiled-in "nobody",
    # which Debian has no group of; a non-root master cannot switch and warns on the line
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = {name: root / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    config = root / "nginx.conf"
    config.write_text(
        f"""{user}
worker_processes 1;  # one worker: max_fails state is per worker, so the tests see one
pid {root / "nginx.pid"};
lock_file {root / "nginx.lock"};
error_log {root / "error.log"} info;
events {{}}
http {{
    access_log {root / "access.log"};
    {" ".join(f"{name}_temp_path {path};" for name, path in temp.items())}
    include {include};
}}
"""
    )
    return config


def nginx_command(binary: Path, config: Path) -> list[str]:
    # -e: the error log before the configuration is read (else the compiled-in path)
    return [str(binary), "-p", str(config.parent), "-c", str(config), "-e", str(config.parent / "error.log")]


def test_nginx_accepts_the_config(nginx: Path, tmp_path: Path) -> None:
    include = tmp_path / "vidserve.conf"
    replicas = {name: f"127.0.0.1:{free_port()}" for name in REPLICAS}
    include.write_text(render_config(NGINX_CONF.read_text(), f"127.0.0.1:{free_port()}", replicas))
    result = subprocess.run(
        [*nginx_command(nginx, main_config(tmp_path, include)), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr, result.stderr


def test_the_config_lists_the_compose_replicas_in_both_upstreams() -> None:
    text = NGINX_CONF.read_text()
    expected = [f"{name}:{REPLICA_PORT}" for name in REPLICAS]
    assert upstream_servers(text) == {"vidserve_sessions": expected, "vidserve_any": expected}
    assert re.search(r"^\s*hash \$vidserve_session consistent;", text, re.MULTILINE)
    assert re.search(r"^\s*proxy_next_upstream error timeout http_503 non_idempotent;", text, re.MULTILINE)
    assert LISTEN_LINE.search(text)


def test_every_directive_of_the_config_says_why() -> None:
    """A directive has its own comment, or is one of a run of lines right below a comment."""
    explained, bare = False, []
    for number, line in enumerate(NGINX_CONF.read_text().splitlines(), 1):
        code = line.split("#", 1)[0].strip()
        if not line.strip():
            explained = False  # a blank line ends a comment's run
        elif not code:
            explained = True  # a comment line
        elif code != "}":
            if "#" not in line and not explained:
                bare.append(f"{number}: {line.strip()}")
            if code.endswith("{"):
                explained = False  # a block's first directive needs its own reason
    assert not bare, "directives without a comment:\n" + "\n".join(bare)


# --- two loopback backends and the proxy in front ------------------------------------------------


@dataclass
class Backend:
    """A stand-in replica: answers every HTTP request with its name, the method, path and
    headers it got, and every websocket with its name and path, then echoes each message.
    ``unavailable`` makes it answer 503 to both, as a draining replica does; /v1/jobs/{id} is
    404 unless the id is one of its ``jobs``, as a job lives on one replica."""

    name: str
    unavailable: bool = False
    jobs: set[str] = field(default_factory=set)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method or "WS", path)

    def __post_init__(self) -> None:
        # why a socket bound here: nginx's config needs the port before the server runs
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app, interface="asgi3", log_level="warning", lifespan="off", ws_ping_interval=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, f"{self.name} did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and close the listening socket: connections are then refused."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    def answer(self, scope: Scope, **extra: Any) -> bytes:
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        return json.dumps({"backend": self.name, "path": scope["path"], "headers": headers, **extra}).encode()

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size, more = size + len(message.get("body", b"")), message.get("more_body", False)
        self.seen.append((scope["method"], scope["path"]))
        job = re.fullmatch(r"/v1/jobs/([^/]+).*", scope["path"])
        if self.unavailable:
            status, body = 503, b'{"error": {"code": "shutting_down", "message": "draining"}}'
        elif job and job[1] not in self.jobs:
            status, body = 404, b'{"error": {"code": "not_found", "message": "no such job"}}'
        else:
            status, body = 200, self.answer(scope, method=scope["method"], body_bytes=size)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        self.seen.append(("WS", scope["path"]))
        if self.unavailable:  # refused at the handshake with an HTTP answer, as the server does
            await send({"type": "websocket.http.response.start", "status": 503, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"draining"})
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": self.answer(scope).decode()})
        while (message := await receive())["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": self.name.encode() + b":" + message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": f"{self.name}:{message['text']}"})


@dataclass
class Proxy:
    url: str  # http://127.0.0.1:PORT, nginx
    ws_url: str
    backends: dict[str, Backend]  # by the compose name whose server lines they took
    client: httpx.Client  # one keep-alive connection to nginx; each request is routed anew

    def get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.request("GET", path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.request(method, self.url + path, **kwargs)
        assert response.status_code == 200, (method, path, response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

    def backend(self, name: str) -> Backend:
        (backend,) = [b for b in self.backends.values() if b.name == name]
        return backend

    def other(self, backend: Backend) -> Backend:
        (other,) = [b for b in self.backends.values() if b is not backend]
        return other

    def stream(self, session: str) -> str:
        """The backend a websocket to the session's stream reached (after one echo)."""
        with connect(f"{self.ws_url}/v1/sessions/{session}/stream", open_timeout=10) as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["path"] == f"/v1/sessions/{session}/stream"
            ws.send("ping")
            assert ws.recv(timeout=10) == f"{hello['backend']}:ping"
            name: str = hello["backend"]
            return name


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nginx exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"nginx not listening on {port} after {timeout} s:\n{log.read_text()}")


@pytest.fixture
def proxy(nginx: Path, tmp_path: Path) -> Iterator[Proxy]:
    """nginx in the foreground with the rendered config, in front of backends "a" and "b";
    each test gets its own, since a failed backend stays marked down for fail_timeout."""
    backends = {"vidserve-1": Backend("a"), "vidserve-2": Backend("b")}
    for backend in backends.values():
        backend.start()
    port = free_port()
    include = tmp_path / "vidserve.conf"
    addresses = {name: backend.address for name, backend in backends.items()}
    include.write_text(render_config(NGINX_CONF.read_text(), f"127.0.0.1:{port}", addresses))
    config = main_config(tmp_path, include)
    log = tmp_path / "error.log"
    process = subprocess.Popen(
        [*nginx_command(nginx, config), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_listening(port, process, log)
        with httpx.Client(timeout=10) as client:
            yield Proxy(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", backends, client)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown: open websockets are cut
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for backend in backends.values():
            if backend.thread.is_alive():
                backend.stop()


def test_one_session_stays_on_one_replica(proxy: Proxy) -> None:
    session = "ses_0123456789abcdef"
    home = proxy.get(f"/v1/sessions/{session}")["backend"]
    landed = {
        proxy.get(f"/v1/sessions/{session}")["backend"],
        proxy.get(f"/v1/sessions/{session}?wait=1")["backend"],  # the query is not part of the key
        proxy.request("POST", f"/v1/sessions/{session}/frames", content=b"frame")["backend"],
        proxy.request("DELETE", f"/v1/sessions/{session}")["backend"],
        proxy.stream(session),
    }
    assert landed == {home}
    seen = proxy.backend(home).seen
    assert ("POST", f"/v1/sessions/{session}/frames") in seen
    assert ("WS", f"/v1/sessions/{session}/stream") in seen
    assert not any(session in path for _, path in proxy.other(proxy.backend(home)).seen)


def test_many_sessions_spread_over_both_replicas(proxy: Proxy) -> None:
    sessions = [f"ses_{n:04x}{n * 7919:08x}" for n in range(64)]
    first = {s: proxy.get(f"/v1/sessions/{s}")["backend"] for s in sessions}
    again = {s: proxy.get(f"/v1/sessions/{s}/frames")["backend"] for s in sessions}
    assert first == again
    counts = {name: list(first.values()).count(name) for name in ("a", "b")}
    assert min(counts.values()) >= 8, counts  # ketama on 2 servers: far from all on one


def test_everything_else_goes_round_robin(proxy: Proxy) -> None:
    landed = [proxy.get("/v1/models")["backend"] for _ in range(4)]
    landed += [proxy.request("POST", "/v1/sessions", json={"task": "segment"})["backend"] for _ in range(2)]
    landed += [proxy.request("POST", "/v1/interpolate", content=b"x")["backend"] for _ in range(2)]
    assert set(landed) == {"a", "b"}
    assert all(one != two for one, two in itertools.pairwise(landed)), landed  # in turn
    # "/v1/sessions/" with no id is not a session path either
    assert {proxy.get("/v1/sessions/")["backend"] for _ in range(2)} == {"a", "b"}


def test_headers_and_bodies_reach_the_replica(proxy: Proxy) -> None:
    body = os.urandom(8 << 20)  # over nginx's 1 MiB default limit, under the server's own
    answer = proxy.request("POST", "/v1/sessions/ses_a/frames", content=body, headers={"X-Request-ID": "r1"})
    assert answer["body_bytes"] == len(body)
    headers = answer["headers"]
    assert headers["host"] == proxy.url.removeprefix("http://")  # unchanged, port included
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"] == "127.0.0.1"
    assert headers["x-forwarded-port"] == proxy.url.rsplit(":", 1)[1]
    assert headers["x-request-id"] == "r1"
    assert re.fullmatch(r"[0-9a-f]{32}", proxy.get("/v1/models")["headers"]["x-request-id"])  # made up
    assert proxy.get("/v1/models")["headers"]["connection"] == "close"  # no upgrade asked


def test_a_websocket_round_trips_through_the_proxy(proxy: Proxy) -> None:
    with connect(f"{proxy.ws_url}/v1/sessions/ses_ws/stream", open_timeout=10, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["path"] == "/v1/sessions/ses_ws/stream"
        assert hello["headers"]["upgrade"].lower() == "websocket"
        assert hello["headers"]["connection"].lower() == "upgrade"
        name = hello["backend"]
        for n in range(3):
            ws.send(f"message {n}")
            assert ws.recv(timeout=10) == f"{name}:message {n}"
        frame = os.urandom(4 << 20)  # a binary frame larger than any proxy buffer
        ws.send(frame)
        assert ws.recv(timeout=10) == name.encode() + b":" + frame


def test_a_draining_replica_sends_its_sessions_to_the_other(proxy: Proxy) -> None:
    session = "ses_draining"
    home = proxy.backend(proxy.get(f"/v1/sessions/{session}")["backend"])
    other = proxy.other(home)
    home.unavailable = True  # it answers 503, as on SIGTERM
    home.seen.clear()
    # the POST was sent to the draining replica first, got 503, and was sent again to the other
    assert proxy.request("POST", f"/v1/sessions/{session}/frames", content=b"f")["backend"] == other.name
    assert home.seen == [("POST", f"/v1/sessions/{session}/frames")]
    assert proxy.get(f"/v1/sessions/{session}")["backend"] == other.name
    assert proxy.stream(session) == other.name
    assert {proxy.request("POST", "/v1/sessions", json={})["backend"] for _ in range(4)} == {other.name}


def test_a_websocket_handshake_refused_with_503_goes_to_the_other(proxy: Proxy) -> None:
    session = "ses_handshake"
    home = proxy.backend(proxy.stream(session))
    home.unavailable = True
    home.seen.clear()
    assert proxy.stream(session) == proxy.other(home).name
    assert home.seen == [("WS", f"/v1/sessions/{session}/stream")]  # tried first, answered 503


def test_a_stopped_replica_sends_its_sessions_to_the_other(proxy: Proxy) -> None:
    session = "ses_stopped"
    home = proxy.backend(proxy.get(f"/v1/sessions/{session}")["backend"])
    other = proxy.other(home)
    home.stop()  # connections to it are refused now
    assert proxy.request("POST", f"/v1/sessions/{session}/frames", content=b"f")["backend"] == other.name
    assert proxy.get(f"/v1/sessions/{session}")["backend"] == other.name
    assert proxy.stream(session) == other.name
    assert {proxy.get("/v1/models")["backend"] for _ in range(4)} == {other.name}


def test_a_job_is_found_on_whichever_replica_holds_it(proxy: Proxy) -> None:
    proxy.backend("b").jobs.add("job_1")
    for _ in range(4):  # whichever replica round-robin tries first
        assert proxy.get("/v1/jobs/job_1")["backend"] == "b"
        assert proxy.get("/v1/jobs/job_1/result")["backend"] == "b"
    assert proxy.request("DELETE", "/v1/jobs/job_1")["backend"] == "b"
    assert ("GET", "/v1/jobs/job_1") in proxy.backend("a").seen  # "a" was asked, and said 404
    # a job no replica holds: the last one's 404
    assert httpx.get(f"{proxy.url}/v1/jobs/job_2", timeout=10).status_code == 404
    # and a 404 does not take a replica out of the rotation
    assert {proxy.get("/v1/models")["backend"] for _ in range(2)} == {"a", "b"}


def test_with_every_replica_down_the_client_gets_502(proxy: Proxy) -> None:
    for backend in proxy.backends.values():
        backend.stop()
    assert httpx.get(f"{proxy.url}/v1/sessions/ses_x", timeout=10).status_code == 502
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{proxy.ws_url}/v1/sessions/ses_x/stream", open_timeout=10)
    assert refused.value.response.status_code == 502


# --- the compose profile -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def started_by(services: dict[str, Any], named: list[str]) -> set[str]:
    """What `docker compose up NAMED...` starts: the named services and their dependencies."""
    started, todo = set(), list(named)
    while todo:
        name = todo.pop()
        if name not in started:
            started.add(name)
            todo += list(services[name].get("depends_on", []))  # a list, or a mapping by name
    return started


def test_compose_has_a_replicas_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    profile = {name for name, service in services.items() if "replicas" in service.get("profiles", [])}
    assert profile == {*REPLICAS, "redis", "nginx"}
    devices = []
    for name in REPLICAS:
        service = services[name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and "count" not in device
        devices += device["device_ids"]
        env = service["environment"]
        assert env["VIDSERVE_STATE_STORE"] == "redis://redis:6379/0"
        assert env["VIDSERVE_PUBLIC_URL"] == f"http://localhost:{PROXY_PORT}"
        assert int(env["VIDSERVE_PORT"]) == REPLICA_PORT  # the port vidserve.conf's servers name
        assert "redis" in service["depends_on"]
        assert not any(port.split(":")[-2:-1] == [str(PROXY_PORT)] for port in service["ports"])
        # the grace period covers the drain and the checkpoints after it
        grace = float(service["stop_grace_period"].removesuffix("s"))
        drain = env.get("VIDSERVE_DRAIN_TIMEOUT_S", Settings.model_fields["drain_timeout_s"].default)
        assert grace > float(drain)
    assert sorted(devices) == ["0", "1"]  # one GPU each, not the same one
    redis = services["redis"]
    assert redis["image"] == "redis:7" and "ports" not in redis
    assert "--maxmemory" in redis["command"] and "--maxmemory-policy" in redis["command"]
    nginx = services["nginx"]
    assert nginx["image"] == "nginx:1.27"
    assert f"{PROXY_PORT}:{PROXY_PORT}" in nginx["ports"]
    mounts = [volume.split(":") for volume in nginx["volumes"]]
    assert any((REPO_ROOT / source).resolve() == NGINX_CONF and target.startswith("/etc/nginx/conf.d/")
               for source, target, *_ in mounts), mounts  # fmt: skip
    assert set(REPLICAS) <= set(nginx["depends_on"])  # their names resolve when nginx starts


def test_a_plain_up_starts_neither_the_replicas_nor_their_proxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"vidserve"}
    assert started_by(services, sorted(always)) == {"vidserve"}
    # `docker compose --profile replicas up -d nginx` (README): the profile without the single server
    assert started_by(services, ["nginx"]) == {"nginx", *REPLICAS, "redis"}


def test_the_readme_starts_the_profile_as_the_compose_file_says() -> None:
    command = "docker compose --profile replicas up -d nginx"
    assert command in (REPO_ROOT / "README.md").read_text()
    assert command in COMPOSE.read_text()
