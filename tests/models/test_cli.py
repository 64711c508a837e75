"""``python -m models``, run as a user runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.repository import read_metadata
from models.rife.checkpoint import expected_shapes
from models.rife.spec import get_spec
from tests.conftest import REPO_ROOT
from tests.hashed_weights import hashed_state_dict


def _run(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if cache is not None:
        env["VIDSERVE_MODEL_REPOSITORY"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def demo_b(conformance_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    vectors = np.load(conformance_dir / "rife" / "rife_vectors.npz")
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for name in ("frame0", "frame1"):
        path = folder / f"{name}.png"
        Image.fromarray(vectors[f"demo_b/{name}_u8"]).save(path)
        paths.append(path)
    return paths[0], paths[1], vectors


@pytest.mark.parametrize("engine", ["eager", "onnx"])
def test_raw_output_matches_the_reference(
    engine: str, demo_b: tuple[Path, Path, Any], rife_v40_weights: Path, tmp_path: Path
) -> None:
    frame0, frame1, vectors = demo_b
    out = tmp_path / "mid.npy"
    done = _run(
        "interpolate", str(frame0), str(frame1), "--model", "rife-4.0", "--weights", str(rife_v40_weights),
        "--timestep", "0.5", "--engine", engine, "--out", str(out), "--raw", cache=tmp_path / "repo",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    raw = np.load(out)
    assert raw.dtype == np.float32 and raw.shape == (3, 180, 320)
    assert float(np.abs(raw - vectors["v4.0_real_demo_b_t0.5_s1.0"]).max()) < 1e-3


def test_factor_writes_one_png_per_timestep(demo_b: tuple[Path, Path, Any], tmp_path: Path) -> None:
    """Registry weights (the built-in default model), a folder of PNGs, a progress bar."""
    frame0, frame1, _ = demo_b
    done = _run("interpolate", str(frame0), str(frame1), "--factor", "4", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["t0.2500.png", "t0.5000.png", "t0.7500.png"]
    assert Image.open(tmp_path / "out" / "t0.5000.png").size == (320, 180)
    assert "3/3" in done.stderr, "several outputs show a progress bar"


def test_export_writes_engine_and_metadata(rife_v40_weights: Path, tmp_path: Path) -> None:
    done = _run(
        "export", "rife", "--version", "4.0", "--format", "torchscript", "--weights", str(rife_v40_weights),
        "--repository", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rife-4.0" / "torchscript-fp32" / "model.ts").is_file()
    assert (tmp_path / "rife-4.0" / "torchscript-fp32" / "metadata.json").is_file()


def test_export_writes_the_feature_encoder_part(tmp_path: Path) -> None:
    """4.22+: ``--part encoder`` writes the encoder the server runs once per frame."""
    weights = tmp_path / "flownet.pkl"
    torch.save(hashed_state_dict(expected_shapes(get_spec("4.25"))), weights)
    done = _run(
        "export", "rife", "--version", "4.25", "--format", "torchscript", "--part", "encoder",
        "--weights", str(weights), "--repository", str(tmp_path / "repo"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "repo" / "rife-4.25.encoder" / "torchscript-fp32"
    assert done.stdout.strip() == str(folder / "model.ts")
    metadata = read_metadata(folder)
    assert [t.name for t in metadata.inputs] == ["image"] and metadata.extra["part"] == "encoder"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch", "rife-9.9"], "unknown model"),
        (["interpolate", "missing0.png", "missing1.png", "--out", "x"], "not a readable image"),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str) -> None:
    done = _run(*args)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_timestep_outside_range_is_refused(demo_b: tuple[Path, Path, Any], tmp_path: Path) -> None:
    frame0, frame1, _ = demo_b
    done = _run("interpolate", str(frame0), str(frame1), "--timestep", "1.5", "--out", str(tmp_path))
    assert done.returncode == 1 and "between 0 and 1" in done.stderr
