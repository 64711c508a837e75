"""Loading released ``flownet*.pkl`` checkpoints into ``IFNet``, unchanged.

A release holds more than the flow network: the ``module.`` prefix of DataParallel,
the teacher block used in training (``block_tea.*``) and, in 4.0, a refinement stage
(``contextnet.*``, ``unet.*``) that fast mode never runs. Those are dropped; every
tensor the flow network needs must be present with its exact shape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from models.rife.ifnet import IFNet
from models.rife.spec import SPECS, RifeSpec

log = logging.getLogger(__name__)

TRAINING_ONLY_PREFIXES = ("block_tea.", "contextnet.", "unet.")
_BLOCK_NAME = re.compile(r"^block(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the network; the message names the tensors."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, without executing any pickled code."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn download or a non-checkpoint file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}


def flow_tensors(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The flow network's tensors, under the checkpoint's names without ``module.``."""
    out = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.")
        if not name.startswith(TRAINING_ONLY_PREFIXES):
            out[name] = tensor
    return out


def to_module_name(name: str) -> str:
    """Checkpoint ``block3.conv0...`` → module ``blocks.3.conv0...``."""
    return _BLOCK_NAME.sub(r"blocks.\1.", name)


def to_checkpoint_name(name: str) -> str:
    return re.sub(r"^blocks\.(\d+)\.", r"block\1.", name)


def expected_shapes(spec: RifeSpec) -> dict[str, tuple[int, ...]]:
    """Checkpoint name → shape of every tensor the flow network of ``spec`` needs."""
    with torch.device("meta"):
        net = IFNet(spec)
    return {to_checkpoint_name(k): tuple(v.shape) for k, v in net.state_dict().items()}


def check_tensors(tensors: Mapping[str, Tensor], spec: RifeSpec, source: str) -> None:
    """Raise ``CheckpointError`` naming every missing or mis-shaped tensor."""
    expected = expected_shapes(spec)
    missing = sorted(set(expected) - set(tensors))
    wrong = [
        f"{k}: expected {'x'.join(map(str, shape))}, found {'x'.join(map(str, tensors[k].shape))}"
        for k, shape in expected.items()
        if k in tensors and tuple(tensors[k].shape) != shape
    ]
    if not missing and not wrong:
        return
    lines = [f"{source} does not fit RIFE {spec.version}:"]
    lines += [f"  missing {k}" for k in missing[:20]]
    lines += [f"  ... and {len(missing) - 20} more missing" for _ in range(len(missing) > 20)]
    lines += [f"  wrong shape {w}" for w in wrong[:20]]
    fits = [v for v in matching_versions(tensors) if v != spec.version]
    if fits:
        lines.append(f"  (the tensors fit {' or '.join('rife-' + v for v in fits)}: choose that model)")
    raise CheckpointError("\n".join(lines))


def matching_versions(tensors: Mapping[str, Tensor]) -> list[str]:
    """The releases whose flow network these tensors fit exactly (4.25 and 4.26 share one)."""
    fits = []
    for version, spec in SPECS.items():
        expected = expected_shapes(spec)
        if all(k in tensors and tuple(tensors[k].shape) == s for k, s in expected.items()):
            fits.append(version)
    return fits


def load_ifnet(source: str | Path | Mapping[str, Tensor], spec: RifeSpec) -> IFNet:
    """An eval-mode float32 ``IFNet`` with a released checkpoint's weights."""
    name = str(source) if isinstance(source, str | Path) else "state dict"
    state = read_state_dict(source) if isinstance(source, str | Path) else dict(source)
    tensors = flow_tensors(state)
    check_tensors(tensors, spec, name)
    extra = sorted(set(tensors) - set(expected_shapes(spec)))
    if extra:
        log.warning("%s: ignoring %d tensors the flow network does not use: %s", name, len(extra), extra[:5])
    net = IFNet(spec)
    net.load_state_dict(
        {to_module_name(k): v.float() for k, v in tensors.items() if k not in extra}, strict=True
    )
    return net.eval()
