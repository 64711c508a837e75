"""Engines: one loaded network per model, shared by every session.

The three backends (eager torch, TorchScript, ONNX Runtime with IOBinding) are the runners
in ``models/runtime.py``, shared with the CLI and the benchmarks; this package chooses one
from the settings, loads it once, warms it up, and says what really runs.
"""

from server.engines.engine import Engine, EngineError, MeteredRunner, describe_runner
from server.engines.loading import choose_backend, choose_providers, load_rife_engine, load_xmem_engine_set

__all__ = [
    "Engine",
    "EngineError",
    "MeteredRunner",
    "choose_backend",
    "choose_providers",
    "describe_runner",
    "load_rife_engine",
    "load_xmem_engine_set",
]
