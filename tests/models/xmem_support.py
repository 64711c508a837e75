"""Test support: XMem with the conformance README's hashed weights, on every local engine, and
a long stream of tiny frames with objects coming and going (the memory-bound test and its
3000-frame bench, ``bench/xmem_bound.py``)."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import torch

from models.repository import Format
from models.runtime import EngineKind
from models.xmem.checkpoint import load_xmem
from models.xmem.export import XMemEngines, eager_engines, export_xmem, load_engines
from models.xmem.inference_core import InferenceCore
from models.xmem.memory_manager import MemoryManager
from models.xmem.network import XMem
from tests.hashed_weights import xmem_hashed_state_dict


def xmem_engine_params(*, exported_only: bool = False) -> list[object]:
    """Each engine kind as a pytest param, skipped with a reason where its library is missing."""
    has_onnx = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
    reason = "onnxruntime and onnx are needed for the ONNX engines"
    params: list[object] = [] if exported_only else [pytest.param("eager")]
    params.append(pytest.param("torchscript"))
    params.append(pytest.param("onnx", marks=pytest.mark.skipif(not has_onnx, reason=reason)))
    return params


@cache
def hashed_xmem() -> XMem:
    with torch.device("meta"):
        layout = {k: (tuple(v.shape), v.dtype) for k, v in XMem().state_dict().items()}
    return load_xmem(xmem_hashed_state_dict(layout))


_ENGINES: dict[str, XMemEngines] = {}


def xmem_engines(kind: EngineKind, tmp_path_factory: pytest.TempPathFactory) -> XMemEngines:
    """One set of engines per kind for the whole test session (exported once)."""
    if kind not in _ENGINES:
        net = hashed_xmem()
        if kind == "eager":
            _ENGINES[kind] = eager_engines(net)
        else:
            fmt: Format = "onnx" if kind == "onnx" else "torchscript"
            folder, _ = export_xmem(net, tmp_path_factory.mktemp("xmem-repo"), fmt)
            _ENGINES[kind] = load_engines(folder, fmt)
    return _ENGINES[kind]


# --- a long stream with objects coming and going --------------------------------------------


def tiny_frames(count: int, size: int = 16) -> list[np.ndarray]:
    """A moving bright square on a textured background: cheap, deterministic, not constant."""
    gen = np.random.default_rng(0)
    base = gen.integers(0, 256, (size, size, 3), dtype=np.uint8)
    frames = []
    for t in range(count):
        frame = np.roll(base, t % size, axis=1).copy()
        y = (t * 3) % (size - 8)
        frame[y : y + 8, 4:12] = 255
        frames.append(frame)
    return frames


def square_mask(size: int, obj: int, top: int, left: int) -> np.ndarray:
    """uint8 size×size: an 8×8 square of ``obj`` at (top, left)."""
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + 8, left : left + 8] = obj
    return mask


# why 16: one stride of the network, so each frame is a single memory element
TINY_SIZE = 16


@dataclass(frozen=True)
class ObjectsPlan:
    """Objects 1 and 2 from frame 0, object 3 added on ``add_at`` (a new object group), object
    1 removed before frame ``remove_at``."""

    frames: int
    add_at: int
    remove_at: int


@dataclass
class StreamLog:
    """What one planned stream showed, over every step."""

    peak_work: int = 0  # working-memory elements
    peak_long: int = 0  # long-term elements
    peak_bytes: int = 0  # ``MemoryManager.nbytes()``, both memories
    removals_before_add: int = 0  # long-term removals before object 3's group arrived
    removals_before_remove: int = 0  # ... before object 1 went
    # removals while the long-term groups held values for different numbers of elements:
    # the case the reference refuses (XMem issue 43)
    uneven_removals: int = 0
    all_finite: bool = True
    object_ids: list[int] | None = None  # of the last result
    seconds: float = 0.0


def run_objects_stream(core: InferenceCore, plan: ObjectsPlan) -> StreamLog:
    """Step ``plan.frames`` tiny frames through ``core`` with the plan's events."""
    log, start = StreamLog(), time.perf_counter()
    first = square_mask(TINY_SIZE, 1, 0, 0) + square_mask(TINY_SIZE, 2, 8, 8)
    for t, frame in enumerate(tiny_frames(plan.frames, TINY_SIZE)):
        memory = core.state.memory
        if t == plan.add_at:
            log.removals_before_add = memory.long_term_removals
        if t == plan.remove_at:
            log.removals_before_remove = memory.long_term_removals
            core.remove_object(1)
        uneven, removals = _groups_uneven(memory), memory.long_term_removals
        if t == 0:
            result = core.step(frame, first)
        elif t == plan.add_at:
            result = core.step(frame, square_mask(TINY_SIZE, 3, 0, 8), objects=[3])
        else:
            result = core.step(frame)
        memory = core.state.memory
        if uneven and memory.long_term_removals > removals:
            log.uneven_removals += 1
        _watch(log, memory)
        log.all_finite = log.all_finite and bool(torch.isfinite(result.prob).all())
        log.object_ids = result.object_ids
    log.seconds = time.perf_counter() - start
    return log


def _groups_uneven(memory: MemoryManager) -> bool:
    long = memory.long
    return len({long.value_size(g) for g in range(long.num_groups)}) > 1


def _watch(log: StreamLog, memory: MemoryManager) -> None:
    log.peak_work = max(log.peak_work, memory.work.size)
    log.peak_long = max(log.peak_long, memory.long.size)
    log.peak_bytes = max(log.peak_bytes, sum(memory.nbytes().values()))
