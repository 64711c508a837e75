"""Servers shared by the client tests: real uvicorn on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.support import RunningServer, running_server
from tests.server.test_segmentation import xmem_settings


@pytest.fixture(scope="module")
def xmem_server(hashed_checkpoint: Path, engine_repository: Path) -> Iterator[RunningServer]:
    """XMem on the hashed-weight checkpoint, the suite's engine repository."""
    with running_server(xmem_settings(hashed_checkpoint, engine_repository)) as running:
        yield running
