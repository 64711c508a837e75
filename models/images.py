"""Reading and writing frames: Pillow decodes PNG, JPEG and WebP, and writes PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """A file or byte string that is not an image we can read."""


def read_rgb(path: Path) -> np.ndarray:
    """An image file → uint8 H×W×3 RGB (alpha dropped, palettes and greys expanded)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc


def write_png(path: Path, frame: np.ndarray) -> None:
    """frame: uint8 H×W×3 RGB → a PNG file."""
    Image.fromarray(np.ascontiguousarray(frame)).save(path, format="PNG")
