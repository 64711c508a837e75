"""Encoded images in and out: PNG, JPEG and WebP bytes ↔ uint8 H×W×3, with the size
checked before any pixel is decoded."""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image

ImageFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = ["PNG", "JPEG", "WEBP"]


class MediaError(ValueError):
    """Bytes that are not an acceptable image; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def status(self) -> int:
        return 413 if self.code == "image_too_large" else 400


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG, JPEG or WebP bytes → uint8 H×W×3 RGB.

    Raises ``MediaError("invalid_image")`` for anything else or a truncated file, and
    ``MediaError("image_too_large")`` for more than ``max_pixels``, read from the header.
    """
    if not data:
        raise MediaError("invalid_image", "empty message: expected PNG, JPEG or WebP bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
            _check_pixels(image.size, max_pixels)
            image.load()
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError("image_too_large", f"image too large: {exc}") from exc
    except Exception as exc:  # PIL raises many types for bad bytes; all mean "not an image"
        raise MediaError("invalid_image", f"not a PNG, JPEG or WebP image ({type(exc).__name__})") from exc
    return np.array(image.convert("RGB"))  # why a copy: torch warns on read-only arrays


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    check_frame_size(*size, max_pixels)


# why 16: the widest frames served are far narrower (32:9 ultrawide, 2:1 equirectangular
# 360°); a strip 8294400×1 passes a pixel count and pads to 32×8294400 (issue 14)
MAX_ASPECT_RATIO = 16
# why 64: the coarsest multiple any task pads to (interpolation at scale 0.5)
PAD_MULTIPLE = 64


def check_frame_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse (413 ``image_too_large``), before anything is allocated, a frame of more than
    ``max_pixels``, one narrower than 1:16, or one whose padded size would pass the bound;
    every task's frames (images and videos) go through this."""
    if width <= 0 or height <= 0:
        raise MediaError("invalid_image", f"image is {width}×{height}: no pixels")
    if width * height > max_pixels:
        raise MediaError(
            "image_too_large",
            f"image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise MediaError(
            "image_too_large", f"image is {width}×{height}: more elongated than 1:{MAX_ASPECT_RATIO}"
        )
    padded = _padded(width) * _padded(height)
    if padded > 2 * max_pixels + PAD_MULTIPLE**2:
        raise MediaError(
            "image_too_large", f"image is {width}×{height}; padded to multiples of {PAD_MULTIPLE} it "
            f"would be {padded} pixels, more than twice the limit of {max_pixels}",
        )  # fmt: skip


def _padded(side: int) -> int:
    return -(-side // PAD_MULTIPLE) * PAD_MULTIPLE


def encode_image(frame: np.ndarray, fmt: ImageFormat) -> bytes:
    """frame: uint8 H×W×3 → encoded bytes."""
    out = io.BytesIO()
    image = Image.fromarray(frame)
    if fmt == "png":
        # why level 1: lossless either way, and several times faster than the default 6 at 1080p
        image.save(out, "PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(out, "JPEG", quality=95)
    else:
        # why method 0: at 720p 37 ms against the default 4's 89 (bench/host_time.py), and the
        # file no larger at quality 95
        image.save(out, "WEBP", quality=95, method=0)
    return out.getvalue()
