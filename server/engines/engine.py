"""The ``Engine`` the server holds: a runner and the facts about it operators need."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from models.runtime import EngineKind, OnnxRunner, Runner


class MeteredRunner:
    """A runner that reports every call (its name, leading batch size, seconds) to ``observe``."""

    def __init__(self, runner: Runner, name: str, observe: Callable[[str, int, float], None]) -> None:
        self.runner = runner
        self.name = name
        self.observe = observe
        self.kind = runner.kind

    @property
    def device(self) -> torch.device:
        return getattr(self.runner, "device", torch.device("cpu"))

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        started = time.perf_counter()
        out = self.runner(*inputs)
        # why the last input: XMem's row inputs (hidden, others) end each signature, so this
        # counts object rows (R) for segment and encode_value and frames (F) for encode_key
        self.observe(self.name, int(inputs[-1].shape[0]), time.perf_counter() - started)
        return out


def describe_runner(runner: Runner) -> dict[str, object]:
    """Backend and providers of a runner (looking through a MeteredRunner)."""
    inner = runner.runner if isinstance(runner, MeteredRunner) else runner
    device = getattr(inner, "device", torch.device("cpu"))
    if isinstance(inner, OnnxRunner):
        providers, requested, fell_back = list(inner.providers), list(inner.requested), bool(inner.missing)
    else:
        providers = requested = [f"torch:{device.type}"]
        fell_back = False
    return {
        "backend": inner.kind,
        "device": str(device),
        "providers": providers,
        "requested_providers": requested,
        "fell_back": fell_back,
    }


class EngineError(RuntimeError):
    """An engine could not be loaded; the message says which and why."""


@dataclass
class Engine:
    """One loaded network, shared by every session of its model."""

    model: str  # registry name, "rife-4.0"
    backend: EngineKind  # eager | torchscript | onnx
    runner: Runner  # takes and gives tensors in the network's order
    fp16: bool  # half-precision engine
    path: Path | None  # the engine file (None for eager)
    # 4.22+: the feature encoder, split off so a stream encodes each frame once; ``runner`` is
    # then the flow part, which takes both frames' features
    encoder: Runner | None = None
    warm: bool = False  # one call has run, so kernels and allocations are in place
    # why a lock: one engine call at a time; the schedulers already serialise, tools may not
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device(self) -> torch.device:
        """Where inputs should be placed to avoid a copy."""
        return getattr(self.runner, "device", torch.device("cpu"))

    @property
    def providers(self) -> list[str]:
        """What really runs: ONNX Runtime's loaded providers, or the torch device."""
        if isinstance(self.runner, OnnxRunner):
            return list(self.runner.providers)
        return [f"torch:{self.device.type}"]

    @property
    def requested_providers(self) -> list[str]:
        if isinstance(self.runner, OnnxRunner):
            return list(self.runner.requested)
        return self.providers

    @property
    def fell_back(self) -> bool:
        """A requested provider failed to load and ONNX Runtime silently used another (for
        the network or its feature encoder)."""
        runners = [self.runner] if self.encoder is None else [self.runner, self.encoder]
        return any(bool(describe_runner(r)["fell_back"]) for r in runners)

    def run(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """One engine call."""
        with self._lock:
            return self.runner(*inputs)

    def encode(self, image: Tensor) -> Tensor:
        """image: B×3×Hp×Wp → the encoder's features B×k×Hp×Wp (4.22+ only)."""
        assert self.encoder is not None, f"{self.model} has no feature encoder"
        with self._lock:
            (features,) = self.encoder(image)
        return features

    def describe(self) -> dict[str, object]:
        """For /readyz and logs."""
        return {
            "model": self.model,
            "backend": self.backend,
            "fp16": self.fp16,
            "device": str(self.device),
            "providers": self.providers,
            "requested_providers": self.requested_providers,
            "fell_back": self.fell_back,
            "warm": self.warm,
            "feature_encoder": None if self.encoder is None else describe_runner(self.encoder),
            "path": str(self.path) if self.path else None,
        }
