"""Servers shared by the server tests: started once, real uvicorn on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.support import RunningServer, running_server, server_settings


@pytest.fixture(scope="session")
def server(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """The default configuration on the real RIFE v4.0 weights (TorchScript on CPU)."""
    with running_server(server_settings(rife_v40_weights, engine_repository)) as running:
        yield running
