"""A model's engines as the server holds them: a named set of parts, each a runner with the
facts operators need about it (backend, providers that really run, fallback, precision,
warm-up). Every model is one ``EngineSet``, whatever its family and however many parts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from models.runtime import EngineKind, OnnxRunner, Runner

WHOLE = "full"  # the part's name when a model runs as one network

Observe = Callable[[str, int, float], None]  # (metric name, rows, seconds) of one engine call


class EngineError(RuntimeError):
    """An engine could not be loaded; the message says which, why, and what to do."""


class MeteredRunner:
    """A runner that reports every call (its metric name, rows, seconds) to ``observe``."""

    def __init__(self, runner: Runner, name: str, observe: Observe, rows_input: int = 0) -> None:
        self.runner = runner
        self.name = name
        self.observe = observe
        self.rows_input = rows_input  # the input whose leading dimension counts the call's rows
        self.kind = runner.kind

    @property
    def device(self) -> torch.device:
        return getattr(self.runner, "device", torch.device("cpu"))

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        started = time.perf_counter()
        out = self.runner(*inputs)
        self.observe(self.name, int(inputs[self.rows_input].shape[0]), time.perf_counter() - started)
        return out


@dataclass(frozen=True)
class EnginePart:
    """One engine of a model, loaded once and shared by every session of the model."""

    model: str  # registry name of the model it belongs to
    name: str  # the part: ``WHOLE``, or its role in a model of several parts
    runner: Runner = field(repr=False, compare=False)  # what the model's executor calls
    backend: EngineKind  # eager | torchscript | onnx
    fp16: bool  # a half-precision engine
    device: str  # where it computes: "cpu", "cuda:0"
    providers: tuple[str, ...]  # what really runs: ONNX Runtime's loaded providers, or torch:<device>
    requested_providers: tuple[str, ...]  # what was asked for
    path: Path | None  # the engine file (None for eager)
    warm: bool = False  # it has run once, so the first request does not pay for initialisation

    @classmethod
    def of(
        cls,
        model: str,
        name: str,
        runner: Runner,
        *,
        fp16: bool,
        path: Path | None,
        observe: Observe | None = None,
        rows_input: int = 0,
    ) -> EnginePart:
        """The part over ``runner``, metered under ``metric_name`` when ``observe`` is given."""
        device = getattr(runner, "device", torch.device("cpu"))
        if isinstance(runner, OnnxRunner):
            providers, requested = tuple(runner.providers), tuple(runner.requested)
        else:
            providers = requested = (f"torch:{device.type}",)
        part = cls(model, name, runner, runner.kind, fp16, str(device), providers, requested, path)
        if observe is None:
            return part
        return replace(part, runner=MeteredRunner(runner, part.metric_name, observe, rows_input))

    @property
    def metric_name(self) -> str:
        """Its ``model`` label in metrics: the model's own name when it is the whole model."""
        return self.model if self.name == WHOLE else f"{self.model}.{self.name}"

    @property
    def fell_back(self) -> bool:
        """A requested provider failed to load and ONNX Runtime silently used another."""
        return any(p not in self.providers for p in self.requested_providers)

    def describe(self) -> dict[str, object]:
        """For /readyz, /v1/models and logs."""
        return {
            "model": self.model,
            "part": self.name,
            "name": self.metric_name,
            "backend": self.backend,
            "fp16": self.fp16,
            "device": self.device,
            "providers": list(self.providers),
            "requested_providers": list(self.requested_providers),
            "fell_back": self.fell_back,
            "warm": self.warm,
            "path": str(self.path) if self.path else None,
        }


@dataclass(frozen=True)
class EngineSet:
    """One model's engines: its parts, by name, in call order."""

    model: str  # registry name
    parts: tuple[EnginePart, ...]
    warmup_s: float | None = None  # how long warming every part took at load; None: not warmed

    def __post_init__(self) -> None:
        names = [p.name for p in self.parts]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"{self.model}: the parts of an engine set need distinct names, got {names}")

    def part(self, name: str) -> EnginePart:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"{self.model} has no engine part {name!r}; it has {[p.name for p in self.parts]}")

    def runner(self, name: str) -> Runner:
        return self.part(name).runner

    def warmed(self, seconds: float) -> EngineSet:
        """This set once a warm-up call has run every part."""
        return replace(self, parts=tuple(replace(p, warm=True) for p in self.parts), warmup_s=seconds)

    def describe(self) -> list[dict[str, object]]:
        return [p.describe() for p in self.parts]


def warm_up(engines: EngineSet, call: Callable[[], object]) -> EngineSet:
    """Run ``call`` (a small request through every part) and record that it ran and how long."""
    started = time.perf_counter()
    call()
    return engines.warmed(round(time.perf_counter() - started, 3))
