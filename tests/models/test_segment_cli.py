"""``python -m models segment`` as a user runs it: frames folder, prompts, index PNGs, --raw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.images import read_index_mask, write_index_png
from tests.conftest import REPO_ROOT
from tests.models.xmem_support import hashed_xmem


@pytest.fixture(scope="module")
def seq_b(
    conformance_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Any, dict[str, Any]]:
    """seq_b as files: frames, the two prompt masks, hashed weights as a checkpoint, config."""
    vectors = np.load(conformance_dir / "xmem" / "xmem_vectors.npz")
    spec = json.loads((conformance_dir / "xmem" / "xmem_vectors.json").read_text())
    root = tmp_path_factory.mktemp("seq_b")
    (root / "frames").mkdir()
    for t, frame in enumerate(vectors["seq_b/frames_u8"]):
        Image.fromarray(frame).save(root / "frames" / f"{t:05d}.png")
    for t in (0, 6):
        write_index_png(root / f"mask{t}.png", vectors["seq_b/masks_u8"][t])
    torch.save(hashed_xmem().state_dict(), root / "hashed.pth")
    (root / "config.json").write_text(json.dumps(spec["config"]))
    return root, root / "hashed.pth", vectors, spec


def test_segment_matches_the_reference_stream(
    seq_b: tuple[Path, Path, Any, dict[str, Any]], tmp_path: Path
) -> None:
    root, weights, vectors, _ = seq_b
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable, "-m", "models", "segment", str(root / "frames"), "--weights", str(weights),
            "--prompt", f"0:{root / 'mask0.png'}:1,2", "--prompt", f"6:{root / 'mask6.png'}:3",
            "--config", str(root / "config.json"), "--out", str(out), "--raw",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "12/12" in done.stderr, "a progress bar"
    for t in range(12):
        expected = vectors[f"seq_b/prob_{t:03d}"]
        raw = np.load(out / f"{t:05d}.npy")
        assert raw.dtype == np.float32 and raw.shape == expected.shape
        assert float(np.abs(raw - expected).max()) < 1e-3, f"frame {t}"
        ids = read_index_mask(out / f"{t:05d}.png")
        assert ids.shape == (72, 100)
        labels = np.array([0, 1, 2, 3][: expected.shape[0]], dtype=np.uint8)
        assert np.array_equal(ids, labels[expected.argmax(0)]) or _near_tie(expected, ids, labels)


def _near_tie(expected: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> bool:
    """Where the top two probabilities are within 1e-3 either answer is right."""
    top2 = np.sort(expected, axis=0)[-2:]
    differs = ids != labels[expected.argmax(0)]
    return bool(np.all(top2[1][differs] - top2[0][differs] < 1e-3))


def test_bad_prompt_is_one_clear_line(seq_b: tuple[Path, Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    root, weights, _, _ = seq_b
    done = subprocess.run(
        [
            sys.executable, "-m", "models", "segment", str(root / "frames"), "--weights", str(weights),
            "--prompt", f"40:{root / 'mask0.png'}", "--out", str(tmp_path),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1
    assert "holds 12 frames" in done.stderr and "Traceback" not in done.stderr
