"""bench/report.py refuses to write a table on a machine busier than its cores, unless told."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# why: the benchmarks are scripts, importing each other by name from bench/, as they run
sys.path.insert(0, str(REPO_ROOT / "bench"))
from report import FORCE_ENV, overloaded, write_section


def busy(monkeypatch: pytest.MonkeyPatch, load: float) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


def test_a_busy_machine_writes_no_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(FORCE_ENV, raising=False)
    busy(monkeypatch, len(os.sched_getaffinity(0)) + 0.5)
    path = tmp_path / "BENCHMARKS.md"
    with pytest.raises(SystemExit, match=r"above the \d+ usable cores"):
        write_section(path, "demo", "| a | b |")
    assert not path.exists()
    assert "| a | b |" in capsys.readouterr().out  # the run's numbers are not lost


def test_a_quiet_or_forced_machine_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "BENCHMARKS.md"
    busy(monkeypatch, 0.1)
    monkeypatch.delenv(FORCE_ENV, raising=False)
    assert overloaded() is None
    write_section(path, "demo", "first")
    busy(monkeypatch, 99.0)
    monkeypatch.setenv(FORCE_ENV, "1")
    write_section(path, "demo", "second")
    text = path.read_text()
    assert "second" in text and "first" not in text
