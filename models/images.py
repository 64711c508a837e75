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


def read_index_mask(path: Path) -> np.ndarray:
    """An index (palette or greyscale) PNG → uint8 H×W of object ids, 0 for background."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise ImageError(
                    f"{path}: a mask must be an index PNG (palette or greyscale), got mode {image.mode}"
                )
            ids = np.asarray(image)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc
    if ids.max(initial=0) > 255:
        raise ImageError(f"{path}: object ids must be 0..255, found {int(ids.max())}")
    return ids.astype(np.uint8)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (DAVIS masks use it): id → RGB by interleaving its bits."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours += [r, g, b]
    return colours


def write_index_png(path: Path, ids: np.ndarray) -> None:
    """ids: uint8 H×W → a palette PNG whose pixel values are the ids."""
    height, width = ids.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    image.putpalette(voc_palette())
    image.save(path, format="PNG")
