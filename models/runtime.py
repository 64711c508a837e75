"""Run a network, or an engine exported from it, on a batch of tensors.

Three interchangeable runners side by side (eager torch, TorchScript, ONNX Runtime),
each taking and returning CPU-or-device torch tensors in the network's input order.
The offline CLI and the tests use them; the server's engine layer builds on them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

EngineKind = Literal["eager", "torchscript", "onnx"]
ENGINE_KINDS: tuple[EngineKind, ...] = ("eager", "torchscript", "onnx")
CPU_PROVIDERS = ("CPUExecutionProvider",)


class Runner(Protocol):
    """Runs one network on a batch: tensors in, tensors out, in the network's order."""

    kind: EngineKind

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]: ...


class TorchRunner:
    """An eager ``nn.Module`` or a loaded TorchScript module."""

    def __init__(
        self,
        module: nn.Module,
        kind: EngineKind,
        half_inputs: Sequence[int] = (),
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.kind = kind
        # which positional inputs the engine takes in float16 (images of an fp16 export)
        self.half_inputs = frozenset(half_inputs)

    @classmethod
    def load_torchscript(
        cls, path: Path, half_inputs: Sequence[int] = (), device: torch.device | str = "cpu"
    ) -> TorchRunner:
        return cls(torch.jit.load(str(path), map_location=device), "torchscript", half_inputs, device)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Inputs are moved to the module's device; outputs stay there."""
        args = [x.to(self.device) for x in inputs]
        args = [x.half() if i in self.half_inputs else x for i, x in enumerate(args)]
        with torch.inference_mode():
            out = self.module(*args)
        return tuple(out) if isinstance(out, tuple | list) else (out,)


class OnnxRunner:
    """An ONNX Runtime session; reports which execution providers really run."""

    kind: EngineKind = "onnx"

    def __init__(self, path: Path, providers: Sequence[str] = CPU_PROVIDERS) -> None:
        import onnxruntime as ort  # why here: the eager path must not need onnxruntime

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.requested = list(providers)
        # why: ORT falls back to CPU silently when a provider fails to load
        self.providers: list[str] = self.session.get_providers()
        missing = [p for p in self.requested if p not in self.providers]
        if missing:
            log.warning("%s: providers %s did not load; running on %s", path.name, missing, self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = [i.type for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        feeds = {
            name: self._to_numpy(x, t)
            for name, x, t in zip(self.input_names, inputs, self.input_types, strict=True)
        }
        outputs = self.session.run(self.output_names, feeds)
        return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)

    @staticmethod
    def _to_numpy(x: Tensor, onnx_type: str) -> np.ndarray:
        array = x.detach().cpu().numpy()
        return array.astype(np.float16) if onnx_type == "tensor(float16)" else array
