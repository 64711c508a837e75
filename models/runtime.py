"""Run a network, or an engine exported from it, on a batch of tensors.

Three interchangeable runners side by side (eager torch, TorchScript, ONNX Runtime),
each taking and returning CPU-or-device torch tensors in the network's input order.
The offline CLI and the tests use them; the server's engine layer builds on them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

EngineKind = Literal["eager", "torchscript", "onnx"]
ENGINE_KINDS: tuple[EngineKind, ...] = ("eager", "torchscript", "onnx")
# why a lock: TorchScript's compiler and the ONNX exporter keep process-wide state, and models
# load side by side in threads: two RIFE models scripting IFBlock at once failed with "Can't
# redefine method: forward on class __torch__.models.rife.ifnet.IFBlock"
COMPILE_LOCK = threading.Lock()

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


ProviderSpec = str | tuple[str, dict[str, str]]
"""An execution provider by name, or with its options: ("TensorrtExecutionProvider", {...})."""

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

# ONNX tensor types → what IOBinding is told the buffer holds
_ONNX_DTYPES: dict[str, tuple[torch.dtype, type]] = {
    "tensor(float)": (torch.float32, np.float32),
    "tensor(float16)": (torch.float16, np.float16),
    "tensor(int64)": (torch.int64, np.int64),
    "tensor(int32)": (torch.int32, np.int32),
    "tensor(bool)": (torch.bool, np.bool_),
    "tensor(uint8)": (torch.uint8, np.uint8),
}


def provider_name(provider: ProviderSpec) -> str:
    return provider if isinstance(provider, str) else provider[0]


class OnnxRunner:
    """An ONNX Runtime session run through IOBinding; reports which providers really run.

    Inputs are bound where they already are when that is the session's device, and outputs
    are bound on that device, so on a GPU host tensors never round-trip through the host.
    """

    kind: EngineKind = "onnx"

    def __init__(self, path: Path, providers: Sequence[ProviderSpec] = CPU_PROVIDERS) -> None:
        import onnxruntime as ort  # why here: the eager path must not need onnxruntime

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.requested = [provider_name(p) for p in providers]
        # why: ORT falls back to CPU silently when a provider fails to load
        self.providers: list[str] = self.session.get_providers()
        self.missing = [p for p in self.requested if p not in self.providers]
        if self.missing:
            log.warning(
                "%s: providers %s did not load; running on %s", path.name, self.missing, self.providers
            )
        on_gpu = any(p in GPU_PROVIDERS for p in self.providers)
        self.device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = [i.type for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Tensors in (any device), tensors out on the session's device."""
        binding = self.session.io_binding()
        bound = [
            self._bind_input(binding, n, x, t)
            for n, x, t in zip(self.input_names, inputs, self.input_types, strict=True)
        ]
        if self.device.type == "cuda":
            # why: ORT runs on its own stream; inputs written by torch must be complete first
            torch.cuda.current_stream().synchronize()
        for name in self.output_names:
            binding.bind_output(name, self.device.type, self.device.index or 0)
        self.session.run_with_iobinding(binding)
        del bound  # the input buffers had to live until the run finished
        return tuple(torch.from_dlpack(value) for value in binding.get_outputs())

    def _bind_input(self, binding: object, name: str, x: Tensor, onnx_type: str) -> Tensor:
        dtype, np_dtype = _ONNX_DTYPES[onnx_type]
        x = x.detach().to(self.device, dtype).contiguous()
        binding.bind_input(  # type: ignore[attr-defined]
            name, self.device.type, self.device.index or 0, np_dtype, tuple(x.shape), x.data_ptr()
        )
        return x
