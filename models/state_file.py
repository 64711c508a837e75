"""One session's state as bytes: tensors in safetensors, a JSON header in its metadata, and a
sha256 of the tensor bytes, so that a state is restored exactly or refused with a reason.

Layout: a safetensors file whose ``__metadata__`` holds one key, ``vidserve``: the header,
JSON. The header carries ``format``, ``version``, whatever the caller puts in it (task,
model, weights, settings, the task's own fields) and ``tensors_sha256``: the digest of the
tensors, by name in sorted order (name, dtype, shape, bytes). A cut or altered blob fails
to parse or fails the digest; another format or a newer version is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

FORMAT = "vidserve-session-state"
VERSION = 1  # why a number: a replica must refuse state it does not know how to read
METADATA_KEY = "vidserve"
_LENGTH = struct.Struct("<Q")  # safetensors: an 8-byte little-endian header length first


class StateFileError(ValueError):
    """Bytes that are not a session state this code can read; the message says why."""


def pack(tensors: dict[str, Tensor], header: dict[str, Any]) -> bytes:
    """tensors (any device, contiguous copies are made on the CPU) and a JSON-able header → bytes."""
    on_cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    fields = {**header, "format": FORMAT, "version": VERSION, "tensors_sha256": digest_of(on_cpu)}
    return save_tensors(on_cpu, metadata={METADATA_KEY: json.dumps(fields)})


def read_header(blob: bytes) -> dict[str, Any]:
    """The header, checked for the format and a version this code reads (not the digest:
    that needs the tensors, ``unpack`` checks it)."""
    header = _header(blob)
    if header.get("format") != FORMAT:
        raise StateFileError(f"not a vidserve session state (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise StateFileError(
            f"session state version {header.get('version')!r}; this server reads version {VERSION}"
        )
    return header


def unpack(blob: bytes, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """bytes → (tensors on ``device``, header), checked: format, version and digest."""
    header = read_header(blob)
    try:
        tensors = load_tensors(blob)
    except Exception as exc:  # why broad: safetensors raises its own error type for bad bytes
        raise StateFileError(f"session state is corrupt: {exc}") from None
    if digest_of(tensors) != header.get("tensors_sha256"):
        raise StateFileError("session state is corrupt: its tensors do not match their sha256")
    return {name: t.to(device) for name, t in tensors.items()}, header


def digest_of(tensors: dict[str, Tensor]) -> str:
    """sha256 over the CPU tensors by sorted name: name, dtype, shape and bytes of each."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(
            t.reshape(-1).view(torch.uint8).numpy().tobytes()
        )  # why a copy: numpy has no Buffer type for mypy
    return digest.hexdigest()


def _header(blob: bytes) -> dict[str, Any]:
    if len(blob) < _LENGTH.size:
        raise StateFileError(f"session state of {len(blob)} bytes is too short")
    (length,) = _LENGTH.unpack_from(blob)
    if length > len(blob) - _LENGTH.size:
        raise StateFileError("session state is cut short: its header runs past the end")
    try:
        table = json.loads(blob[_LENGTH.size : _LENGTH.size + length])
        header = json.loads(table["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFileError(f"not a vidserve session state: {exc}") from None
    if not isinstance(header, dict):
        raise StateFileError("not a vidserve session state: its header is not an object")
    return header
