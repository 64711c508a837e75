"""RIFE is RIFE: every case recorded from the reference, on every local engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.rife.checkpoint import load_ifnet
from models.rife.ifnet import IFNet
from models.rife.inference import Interpolator
from models.rife.spec import get_spec
from models.runtime import Runner
from tests.models.rife_engines import engine_params, hashed_ifnet, make_runner

# why: the conformance README's bound for float32 engines (recorded in float32 on a CPU)
TOLERANCE = 1e-3


def _cases(conformance_dir: Path) -> list[dict[str, Any]]:
    return list(json.loads((conformance_dir / "rife" / "rife_vectors.json").read_text())["cases"])


@pytest.fixture(scope="module")
def vectors(conformance_dir: Path) -> Any:
    return np.load(conformance_dir / "rife" / "rife_vectors.npz")


@pytest.fixture(scope="module")
def runners(
    tmp_path_factory: pytest.TempPathFactory, rife_v40_weights: Path
) -> dict[tuple[str, str], Runner]:
    """Built lazily: (version, engine) → runner; 4.0 on real weights, the rest hashed."""
    cache: dict[tuple[str, str], Runner] = {}
    nets: dict[str, IFNet] = {}
    repository = tmp_path_factory.mktemp("repository")

    class Lazy(dict[tuple[str, str], Runner]):
        def __missing__(self, key: tuple[str, str]) -> Runner:
            version, engine = key
            if version not in nets:
                spec = get_spec(version)
                nets[version] = (
                    load_ifnet(rife_v40_weights, spec) if version == "4.0" else hashed_ifnet(version)
                )
            cache[key] = make_runner(nets[version], engine, repository / version)
            self[key] = cache[key]
            return cache[key]

    return Lazy()


def test_every_case_is_listed(conformance_dir: Path, vectors: Any) -> None:
    cases = _cases(conformance_dir)
    assert {c["model"] for c in cases} == {"4.0", "4.6", "4.26"}
    assert {c["weights"] for c in cases if c["model"] == "4.0"} == {"real"}
    assert all(c["key"] in vectors.files for c in cases)


@pytest.mark.parametrize("engine", engine_params())
def test_conformance(
    engine: str, conformance_dir: Path, vectors: Any, runners: dict[tuple[str, str], Runner]
) -> None:
    failures = []
    for case in _cases(conformance_dir):
        spec = get_spec(case["model"])
        frame0 = vectors[f"{case['frames']}/frame0_u8"]
        frame1 = vectors[f"{case['frames']}/frame1_u8"]
        height, width = frame0.shape[:2]
        assert list(spec.padded_size(height, width, case["scale"])) == case["padded_hw"]
        interpolator = Interpolator(spec, runners[case["model"], engine], scene_change_threshold=None)
        (out,) = interpolator.interpolate(frame0, frame1, [case["timestep"]], case["scale"])
        expected = vectors[case["key"]]
        assert out.shape == expected.shape and out.dtype == np.float32
        error = float(np.abs(out - expected).max())
        if error > TOLERANCE:
            failures.append(f"{case['key']}: max abs {error:.2e}")
    assert not failures, f"{engine}: " + "; ".join(failures)
