"""bench/gpu.sh and bench/gpu_run.py without a GPU: the script parses, refuses clearly where
there is no GPU, and its dry run (``--cpu``: tiny sizes on the CPU) writes the BENCHMARKS.md
section, the numbers and the log; the report marks a part stopped at its time limit and
weighs the targets; the tests part deselects what cannot run offline and records outcomes."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

# why: the benchmarks are scripts, importing each other by name from bench/, as they run
sys.path.insert(0, str(REPO_ROOT / "bench"))
import gpu_run

SCRIPT = REPO_ROOT / "bench" / "gpu.sh"
BASH = shutil.which("bash") or "/bin/bash"


def gpu_sh(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_gpu_sh_parses() -> None:
    subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


def test_gpu_sh_refuses_without_a_gpu_unless_told_cpu(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # a PATH without nvidia-smi (nor anything else)
    empty.mkdir()
    out = tmp_path / "out"
    refused = gpu_sh(env={"PATH": str(empty), "OUT": str(out)})
    assert refused.returncode == 2
    assert "no GPU here (nvidia-smi not found)" in refused.stderr
    assert "--cpu for a dry run" in refused.stderr
    assert not out.exists()  # refused before writing anything
    unknown = gpu_sh("--cpu", "--only", "rife,sideways", env={"PATH": str(empty), "OUT": str(out)})
    assert unknown.returncode == 2 and "not 'sideways'" in unknown.stderr


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gpu.sh --cpu`` with the measuring parts (the tests part is checked apart, below)."""
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = gpu_sh("--cpu", "--only", "ort,rife,xmem", env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return out


def load(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "gpu.json").read_text())
    return data


def test_dry_run_records_every_step_and_part(dry_run: Path) -> None:
    data = load(dry_run)
    assert {name: s["status"] for name, s in data["steps"].items()} == {
        "env": "ok",
        "ort": "ok",
        "rife": "ok",
        "xmem": "ok",
    }
    assert (
        data["run"]["quick"] is True
        and data["run"]["command"] == "bash bench/gpu.sh --cpu --only ort,rife,xmem"
    )
    for part in ("env", "ort", "rife", "xmem"):
        assert data[part]["finished"] and data[part]["errors"] == [], data[part]
    assert data["env"]["cuda"]["available"] is False and "torch" in data["env"]["packages"]
    log = (dry_run / "gpu.log").read_text()
    assert "== rife: ok (exit 0)" in log and "== gpu.sh: done" in log


def test_dry_run_measures_rife_on_the_servers_path(dry_run: Path) -> None:
    rife = load(dry_run)["rife"]
    engines = {(r["release"], r["engine"]) for r in rife["rife_streams"]}
    assert engines == {(v, e) for v in ("4.6", "4.26") for e in ("eager fp32", "torchscript fp16")}
    for row in rife["rife_streams"]:
        assert row["output_fps"] == pytest.approx(2 * row["between_fps"]) and row["between_fps"] > 0
        assert row["p99_ms"] >= row["median_ms"] > 0 and row["output_fps_with_host_copy"] > 0
    # 4.26 pads to 64 at scale 1, 4.6 to 32
    assert {r["release"]: r["padded"] for r in rife["rife_streams"]} == {"4.6": [64, 96], "4.26": [64, 128]}
    by_engine = {(r["release"], r["engine"]): r for r in rife["rife_4k"]}
    for release in ("4.6", "4.26"):
        reference, half = by_engine[release, "eager fp32"], by_engine[release, "torchscript fp16"]
        assert reference["reference"] == "itself" and reference["max_levels"] == 0
        assert half["reference"] == "eager fp32" and half["finite"]
        assert 0 < half["max_levels"] < 4  # fp16 rounds, but a broken export would be far off
        assert half["fps"] > 0


def test_dry_run_steps_xmem_streams_through_step_batch(dry_run: Path) -> None:
    xmem = load(dry_run)["xmem"]
    assert [r["engine"] for r in xmem["xmem_streams"]] == ["eager fp32", "torchscript fp16"]
    for row in xmem["xmem_streams"]:
        assert (row["streams"], row["per_call"], row["size"]) == (4, 2, [32, 48])
        assert row["rounds"] >= 5 and row["memory_rounds"] >= 1  # a memory frame every 5th
        assert row["p99_ms"] >= row["median_ms"] > 0 and row["fps_per_stream"] > 0
        assert row["engine_ms"] > 0 and row["prepare_ms"] > 0 and row["result_ms"] > 0


def test_dry_run_reports_the_providers_that_really_load(dry_run: Path) -> None:
    ort = load(dry_run)["ort"]
    assert "CPUExecutionProvider" in ort["available"]
    probe = ort["probe"]
    assert probe["requested"] == list(gpu_run.ORT_REQUEST)
    assert probe["loaded"] == ["CPUExecutionProvider"] and probe["fell_back"] is True  # no GPU here
    assert probe["max_levels_vs_eager_cpu"] < 0.5


def test_dry_run_writes_a_section_ready_to_paste(dry_run: Path, tmp_path: Path) -> None:
    md = (dry_run / "gpu.md").read_text()
    assert md.startswith("<!-- bench:gpu -->\n## GPU run: no GPU (dry run)") and md.endswith(
        "<!-- /bench:gpu -->\n"
    )
    for heading in (
        "### Targets",
        "### RIFE 4.6 and 4.26",
        "### XMem",
        "### ONNX Runtime",
        "### Tests on the GPU",
    ):
        assert f"\n{heading}" in md
    assert "Targets: not evaluated (a dry run with tiny sizes)." in md
    assert "| 4.26 | torchscript fp16 | 64×96 (64×128) | 2 |" in md
    assert "| torchscript fp16 | 4 | 2 | 32×48 |" in md
    assert "- TensorrtExecutionProvider: " in md and "- CUDAExecutionProvider: " in md
    assert "- Not run in this call" in md  # the tests part was left out
    assert md.count("- Command: `python bench/gpu_run.py ") == 3  # ort, rife, xmem: each its command
    # render --write replaces its own section of BENCHMARKS.md and leaves the others
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n")
    assert gpu_run.main(["render", "--json", str(dry_run / "gpu.json"), "--write", str(bench)]) == 0
    written = bench.read_text()
    assert "kept" in written and md.strip() in written


def test_report_marks_a_stopped_part_and_weighs_the_targets(dry_run: Path) -> None:
    data = load(dry_run)
    stopped = copy.deepcopy(data)
    stopped["steps"]["xmem"] = {
        "step": "xmem",
        "status": "timed out",
        "rc": 124,
        "seconds": 110,
        "timeout_s": 110,
    }
    stopped["xmem"]["finished"] = False
    xmem_md = gpu_run.xmem_section(stopped)
    assert "**stopped at its time limit of 110 s**" in xmem_md and xmem_md.count("| eager fp32 |") == 1
    # a full run's targets: 16 streams at 31 fps with p99 40 ms meet them; 900 frames/s does not
    full = copy.deepcopy(data)
    full["run"]["quick"] = False
    full["xmem"]["xmem_streams"] = [
        {
            **full["xmem"]["xmem_streams"][0],
            "streams": 16,
            "fps_per_stream": 31.0,
            "p99_ms": 40.0,
            "meets_target": True,
        }
    ]
    full["rife"]["rife_streams"] = [
        {**r, "size": [1080, 1920], "output_fps": 900.0}
        for r in full["rife"]["rife_streams"]
        if r["release"] == "4.26"
    ]
    targets = gpu_run.targets(full)
    assert "| 31.0 fps (eager fp32, 2 frames per call) | yes |" in targets
    assert "| 40.0 ms (eager fp32, 2 frames per call) | yes |" in targets
    assert "RIFE 4.26 2× at 1080p ≥ 1,000 output frames/s | 900 (" in targets and targets.endswith(
        "| **no** |"
    )


def test_tests_part_deselects_what_needs_a_download_and_records_outcomes(tmp_path: Path) -> None:
    assert "tests/server/test_segmentation.py" in gpu_run.device_test_files()
    assert "tests/server/test_operations.py" in gpu_run.device_test_files()  # it mentions CUDA
    assert not [f for f in gpu_run.device_test_files() if f.startswith("tests/bench/")]  # not these
    (tmp_path / "test_tiny.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture\ndef rife_v40_weights():\n    return 1\n\n"
        "def test_needs_weights(rife_v40_weights):\n    pass\n\n"
        "def test_plain():\n    pass\n\n"
        "def test_wrong():\n    assert 1 == 2, 'one is not two'\n"
    )
    record = gpu_run.Record(tmp_path, "tests", ["tests"])
    recorder = gpu_run.TestRecorder(record, {"rife_v40_weights": "not cached here"})
    code = pytest.main(
        ["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
        plugins=[recorder],
    )
    assert code == 1
    outcomes = json.loads((tmp_path / "tests.json").read_text())["outcomes"]
    by_name = {k.rsplit("::", 1)[1]: v for k, v in outcomes.items()}
    assert by_name["test_needs_weights"] == {"outcome": "deselected", "why": "not cached here"}
    assert by_name["test_plain"]["outcome"] == "passed"
    assert by_name["test_wrong"]["outcome"] == "failed" and "one is not two" in by_name["test_wrong"]["why"]
    md = gpu_run.tests_section({"tests": record.data, "steps": {}})
    assert "1 deselected, 1 failed, 1 passed" in md and "one is not two" in md
