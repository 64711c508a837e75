"""What a checkpoint's tensors lack against a network's: the lines of an error that names
every missing, mis-shaped and unexpected tensor (a long list is cut, saying how much)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

LISTED = 20  # names of each kind an error lists before "... and N more"


def mismatches(tensors: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The report's lines, empty when every expected tensor is there with its shape and
    nothing else is."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: expected {_shape(shape)}, found {_shape(tuple(tensors[k].shape))}"
        for k, shape in expected.items()
        if k in tensors and tuple(tensors[k].shape) != shape
    ]
    return _listed("missing", missing) + _listed("wrong shape", wrong) + _listed("unexpected", unexpected)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _listed(kind: str, items: list[str]) -> list[str]:
    lines = [f"  {kind} {item}" for item in items[:LISTED]]
    if len(items) > LISTED:
        lines.append(f"  ... and {len(items) - LISTED} more {kind}")
    return lines
