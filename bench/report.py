"""What every benchmark here shares: the machine and versions it ran on, timing, and its own
marked section of BENCHMARKS.md (replaced in place, so several scripts can write the file)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
FILE_HEADER = "# Benchmarks — written by scripts in bench/; do not edit by hand\n"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def split(text: str) -> list[str]:
    """A comma-separated flag value → its non-empty parts."""
    return [part.strip() for part in text.split(",") if part.strip()]


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def os_name() -> str:
    try:
        release = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return platform.platform()
    pretty = [line.split("=", 1)[1].strip('"') for line in release if line.startswith("PRETTY_NAME=")]
    return f"{pretty[0] if pretty else platform.system()}, kernel {platform.release()}"


def versions() -> str:
    def v(dist: str) -> str:
        return importlib.metadata.version(dist)

    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime-gpu {v('onnxruntime-gpu')} (CPU provider), numpy {np.__version__}, "
        f"Pillow {v('pillow')}, scikit-image {v('scikit-image')}; {os_name()}"
    )


def device_line() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"- Device: {cpu_model()}, {cores} logical cores ({usable} usable); {gpu}."


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for a section's environment line."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` replaced, or appended when it has none."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        return f"{head}{begin}\n{body}\n{end}{tail}"
    start = text.rstrip("\n") if text.strip() else FILE_HEADER.rstrip("\n")
    return f"{start}\n\n{begin}\n{body}\n{end}\n"


FORCE_ENV = "BENCH_FORCE"  # why an environment variable: every script's writes honour it alike


def overloaded() -> str | None:
    """Why this machine is too busy for a table (its 1-minute load above its usable cores),
    or None. A table taken so is slower throughout and its ratios noisy (issue 16: tables
    recorded at loads of 1.5-6 on 2 cores ran 2-3× slower)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0]
    if load <= cores or os.environ.get(FORCE_ENV) == "1":
        return None
    return f"load average {load:.2f} is above the {cores} usable cores; rerun when quieter (or {FORCE_ENV}=1)"


def refuse_when_loaded() -> None:
    """At a benchmark's start: stop before spending the run on a table that would be refused."""
    reason = overloaded()
    if reason is not None:
        raise SystemExit(f"not measuring: {reason}")


def write_section(path: Path, name: str, body: str) -> None:
    """Re-read the file just before writing: other benchmarks may have written meanwhile.
    Refused (the section printed, not written, and a non-zero exit) on a busy machine."""
    reason = overloaded()
    if reason is not None:
        print(body)
        raise SystemExit(f"not writing section {name!r} of {path.name}: {reason}")
    old = path.read_text() if path.is_file() else ""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(replace_section(old, name, body))
    os.replace(tmp, path)
