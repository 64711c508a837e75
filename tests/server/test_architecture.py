"""The task boundary holds: the generic server never names a model family, every task in
the registry implements the interface, and the model packages never import the server."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from models.weights.registry import MODELS
from server.tasks.base import Task
from server.tasks.registry import TASKS
from tests.conftest import REPO_ROOT

# the generic modules: app, state, health, framing, errors, deps, routes for sessions, jobs
# and models, metrics, the scheduler, engines, the session, budget and job stores
GENERIC = [
    "server/app.py",
    "server/state.py",
    "server/settings.py",
    "server/metrics.py",
    "server/media.py",
    "server/logs.py",
    "server/__main__.py",
    "server/api",
    "server/scheduler",
    "server/engines",
    "server/sessions",
    "server/jobs",
    "server/tasks/base.py",
]
FAMILIES = {entry.family for entry in MODELS.values()} | {"ifnet"}  # ifnet: RIFE's network


def generic_files() -> list[Path]:
    files: list[Path] = []
    for name in GENERIC:
        path = REPO_ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_generic_modules_never_name_a_model_family() -> None:
    pattern = re.compile("|".join(sorted(FAMILIES)), re.IGNORECASE)
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in generic_files()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert {"rife", "xmem"} <= FAMILIES
    assert not found, "generic modules name a model family:\n" + "\n".join(found)


def test_generic_modules_import_no_task_package() -> None:
    """Only the app reaches the task packages, through the registry."""
    found = []
    for path in generic_files():
        where = str(path.relative_to(REPO_ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                is_task = name.startswith("server.tasks.") and name != "server.tasks.base"
                is_registry = (where, name) == ("server/app.py", "server.tasks.registry")
                is_family = name.startswith(tuple(f"models.{f}" for f in FAMILIES))
                if (is_task and not is_registry) or is_family:
                    found.append(f"{where} imports {name}")
    assert not found, "\n".join(found)


def test_every_registered_task_serves_a_family_of_its_own() -> None:
    assert all(isinstance(task, Task) for task in TASKS)
    assert len({t.name for t in TASKS}) == len(TASKS)
    families = [f for t in TASKS for f in t.families]
    assert len(set(families)) == len(families), "two tasks claim one family"
    for name in MODELS:
        served = sum(t.serves(name) for t in TASKS)
        assert served == 1, f"{name} is served by {served} tasks"
    for task in TASKS:
        assert task.session_body.model_fields["task"].annotation.__args__ == (task.name,)  # type: ignore[union-attr]


def test_models_never_import_the_server() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "models").rglob("*.py"))
        if re.search(r"^\s*(from|import)\s+server\b", path.read_text(), re.MULTILINE)
    ]
    assert not offenders
