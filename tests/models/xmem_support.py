"""Test support: XMem with the conformance README's hashed weights, on every local engine."""

from __future__ import annotations

import importlib.util
from functools import cache

import pytest
import torch

from models.repository import Format
from models.runtime import EngineKind
from models.xmem.checkpoint import load_xmem
from models.xmem.export import XMemEngines, eager_engines, export_xmem, load_engines
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
