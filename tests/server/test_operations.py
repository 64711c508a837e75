"""Liveness, readiness with the providers that really run, Prometheus metrics, settings."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from pydantic import ValidationError

from server.settings import Settings
from server.state import UnknownModel, task_for
from server.tasks.registry import TASKS
from tests.conftest import REPO_ROOT
from tests.server.support import RunningServer, panning_frames, png, running_server, server_settings


def test_health_and_readiness(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] is True and ready["models"] == ["rife-4.0"]
    (engine,) = ready["engines"]
    assert engine == {
        **engine,
        "model": "rife-4.0",
        "backend": "torchscript",
        "warm": True,
        "fell_back": False,
    }
    assert engine["providers"] == ["torch:cpu"] or engine["providers"] == ["torch:cuda"]


def test_metrics(server: RunningServer) -> None:
    pair = panning_frames(2)
    before = server.metric("vidserve_requests_total", task="interpolate", outcome="ok")
    response = httpx.post(
        f"{server.url}/v1/interpolate", files={"frame0": png(pair[0]), "frame1": png(pair[1])}, timeout=120
    )
    assert response.status_code == 200
    bad = httpx.post(f"{server.url}/v1/interpolate", files={"frame0": b"x", "frame1": png(pair[1])})
    assert bad.status_code == 400
    assert server.metric("vidserve_requests_total", task="interpolate", outcome="ok") == before + 1
    assert server.metric("vidserve_requests_total", task="interpolate", outcome="client_error") >= 1
    assert server.metric("vidserve_batch_size_count", model="rife-4.0") >= 1
    assert server.metric("vidserve_compute_infer_duration_seconds_count", model="rife-4.0") >= 1
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("vidserve_pending_request_count", "vidserve_active_sessions", "vidserve_engine_info"):
        assert f"# TYPE {name} gauge" in text
    assert 'provider="torch:' in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU host CUDA loads, so there is no fallback")
def test_onnx_provider_fallback_is_detected(rife_v40_weights: Path, engine_repository: Path) -> None:
    """onnxruntime-gpu without a GPU drops CUDA silently; we see it and say so."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    settings = server_settings(
        rife_v40_weights,
        engine_repository,
        engine="onnx",
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    with running_server(settings) as fallback:
        (engine,) = httpx.get(f"{fallback.url}/readyz").json()["engines"]
        assert engine["requested_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert engine["providers"] == ["CPUExecutionProvider"]
        assert engine["fell_back"] is True
        info = dict(
            model="rife-4.0",
            backend="onnx",
            provider="CPUExecutionProvider",
            requested="CUDAExecutionProvider,CPUExecutionProvider",
            fell_back="true",
        )
        assert fallback.metric("vidserve_engine_info", **info) == 1


def test_not_ready_until_engines_load(tmp_path: Path) -> None:
    """A server whose weights are missing stays live, reports why it is not ready, and
    answers work with 503."""
    settings = Settings(
        models=["rife-4.0"], weights={"rife-4.0": tmp_path / "missing.pkl"}, model_repository=tmp_path
    )
    with running_server(settings, wait_ready=False) as broken:
        deadline = time.monotonic() + 60
        while (
            not (ready := httpx.get(f"{broken.url}/readyz")).json()["error"] and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert ready.status_code == 503 and "missing.pkl" in ready.json()["error"]
        response = httpx.post(f"{broken.url}/v1/sessions", json={"task": "interpolate"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSERVE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("VIDSERVE_MODELS", '["rife-4.0"]')
    assert Settings().max_batch_size == 16
    monkeypatch.setenv("VIDSERVE_MODELS", '["rife-9"]')
    with pytest.raises(ValidationError, match="unknown models"):
        Settings()


def test_python_m_server_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert "VIDSERVE_" in done.stdout


def test_python_m_server_rejects_bad_settings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={"VIDSERVE_MAX_BATCH_SIZE": "0", "PATH": ""},
    )
    assert done.returncode == 2 and "max_batch_size" in done.stderr


def test_readme_settings_table_is_generated_from_the_code() -> None:
    from server.settings import settings_table

    readme = (REPO_ROOT / "README.md").read_text()
    begin = readme.index("<!-- settings:begin")
    table = readme[readme.index("\n", begin) + 1 : readme.index("<!-- settings:end -->")]
    assert table == settings_table(), "README settings table is stale: run python -m server --settings-table"


def test_a_model_no_task_serves_is_named() -> None:
    """A server built without the task of a configured model (a registry entry whose task
    has not landed, as the clip encoder's once was) says so in one line, naming its tasks;
    ``python -m server`` turns that into exit code 2."""
    without_embed = tuple(t for t in TASKS if t.name != "embed")
    with pytest.raises(UnknownModel, match=r"no task of this server serves model 'videomae-vit-s-k400'"):
        task_for(without_embed, "videomae-vit-s-k400")
    assert task_for(TASKS, "videomae-vit-s-k400").name == "embed"


def test_job_folders_of_a_killed_server_are_removed_at_start(tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves its uploads and partial results; the next start on
    this host removes them, and leaves a living server's folder and another host's alone."""
    import json
    import signal

    from server.app import JOBS_PREFIX, OWNER_FILE, create_app

    script = (
        "import sys, time\n"
        "from server.app import create_app\n"
        "from server.settings import Settings\n"
        f"create_app(Settings(job_dir={str(tmp_path)!r}))\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    (killed,) = tmp_path.glob(f"{JOBS_PREFIX}*")
    (killed / "job_1").mkdir()
    (killed / "job_1" / "source.mp4").write_bytes(b"an upload")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    foreign = tmp_path / f"{JOBS_PREFIX}other"
    foreign.mkdir()
    (foreign / OWNER_FILE).write_text(json.dumps({"host": "another-host", "pid": 1, "started": "0"}))
    living = create_app(Settings(job_dir=tmp_path)).state.server.jobs.root
    left = set(tmp_path.glob(f"{JOBS_PREFIX}*"))
    assert not killed.exists() and foreign in left and living in left
    create_app(Settings(job_dir=tmp_path))  # a second server: the first one's folder is alive
    assert living.exists()
