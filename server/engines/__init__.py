"""Engines: a model's parts, each loaded once and shared by every session (``EngineSet``),
and what every loader needs from the settings (``loading.py``).

The three backends (eager torch, TorchScript, ONNX Runtime with IOBinding) are the runners
in ``models/runtime.py``, shared with the CLI and the benchmarks.
"""

from server.engines.engine import WHOLE, EngineError, EnginePart, EngineSet, MeteredRunner, warm_up
from server.engines.loading import choose_backend, choose_providers, resolve_weights, torch_device

__all__ = [
    "WHOLE",
    "EngineError",
    "EnginePart",
    "EngineSet",
    "MeteredRunner",
    "choose_backend",
    "choose_providers",
    "resolve_weights",
    "torch_device",
    "warm_up",
]
