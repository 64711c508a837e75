"""Frames and masks to and from the wire: images as PNG/JPEG/WebP bytes, masks as index PNGs."""

from __future__ import annotations

import base64
import io
from typing import Any, TypeAlias

import numpy as np
from PIL import Image

# A frame a caller may give: uint8 H×W×3 array, PIL image, or an encoded PNG/JPEG/WebP file.
FrameLike: TypeAlias = "np.ndarray | Image.Image | bytes"

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG; WebP is checked apart (RIFF....WEBP)


def is_encoded_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def encode_frame(frame: FrameLike) -> bytes:
    """frame: uint8 H×W×3 array, PIL image, or encoded bytes → bytes to send (arrays as PNG).

    Bytes are sent as given (the server answers a bad file with ``invalid_image``)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return bytes(frame)
    if isinstance(frame, Image.Image):
        return _png(frame if frame.mode in ("RGB", "L") else frame.convert("RGB"))
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"a frame must be uint8 H×W×3, got {array.dtype} {array.shape}")
    return _png(Image.fromarray(np.ascontiguousarray(array), "RGB"))


def decode_rgb(data: bytes) -> np.ndarray:
    """An encoded image → uint8 H×W×3."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode_index_png(mask: np.ndarray) -> bytes:
    """mask: uint8 H×W object ids (0 background) → a palette ("P") PNG whose indices are the ids."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be H×W object ids, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("mask ids must be 0–255")
        array = array.astype(np.uint8)
    image = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
    image.putpalette([c for i in range(256) for c in (i, i, i)])
    return _png(image)


def decode_index(data: bytes) -> np.ndarray:
    """An index PNG → uint8 H×W object ids (the palette indices, not colours)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image if image.mode in ("P", "L") else image.convert("L"), dtype=np.uint8)


def decode_gray(data: bytes) -> np.ndarray:
    """An 8-bit grayscale PNG (an object's probability) → uint8 H×W."""
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("L"), dtype=np.uint8)


def mask_ids(mask: np.ndarray) -> list[int]:
    """The object ids present in an index mask, ascending, background excluded."""
    return [int(i) for i in np.unique(mask) if i != 0]


def mask_spec(mask: np.ndarray | dict[str, Any]) -> dict[str, Any]:
    """A mask for a message: an index array as ``{"format": "png", "data": base64}``;
    a dict (``{"format": "rle", ...}`` or ``binary_png``) is passed through."""
    if isinstance(mask, dict):
        return mask
    return {"format": "png", "data": base64.b64encode(encode_index_png(mask)).decode("ascii")}
