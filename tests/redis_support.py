"""A real redis-server (Debian's) on a free loopback port, for the state-store tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def require_redis() -> str:
    """The redis-server binary, or a skip (a failure where VIDSERVE_REQUIRE_REDIS=1 or CI)."""
    if Path(REDIS_SERVER).exists():
        return REDIS_SERVER
    reason = f"{REDIS_SERVER} is missing: install Debian's redis-server (scripts/test.sh does, as root)"
    if os.environ.get("VIDSERVE_REQUIRE_REDIS") == "1" or os.environ.get("CI"):
        pytest.fail(f"VIDSERVE_REQUIRE_REDIS=1 or CI is set, but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """redis://127.0.0.1:PORT/0 of a fresh redis-server (no persistence), stopped on exit."""
    binary = require_redis()
    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*command, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise TimeoutError(f"redis-server did not answer on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
