"""The mask files of a segmented video, one layout for every tool that writes them (the CLI's
``--out DIR`` and a clip job's zip): ``00000.png``... index PNGs whose pixel values are
object ids, and ``masks.json`` with each frame's time and each tracked object's COCO RLE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from pycocotools import mask as coco_mask

from models.video import VideoInfo

MASKS_JSON = "masks.json"


class Rle(TypedDict):
    """COCO compressed RLE, JSON-ready."""

    size: list[int]  # [height, width]
    counts: str  # COCO's compressed string


def encode_rle(binary: np.ndarray) -> Rle:
    """binary: bool or uint8 H×W (nonzero = object) → COCO compressed RLE."""
    rle = coco_mask.encode(np.asfortranarray(binary != 0, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def png_name(index: int) -> str:
    """The index PNG of frame ``index``: sorted names are frame order, as ffmpeg's %05d reads."""
    return f"{index:05d}.png"


def frame_record(index: int, time_s: float, mask: np.ndarray, tracked: Sequence[int]) -> dict[str, object]:
    """One frame's entry in ``masks.json``; mask: uint8 H×W ids. Every tracked object gets an
    RLE, empty ones too, so a reader can tell "gone" from "not tracked"."""
    rles = {str(i): encode_rle(mask == i) for i in tracked}
    return {"index": index, "time_s": time_s, "file": png_name(index), "masks": rles}


def masks_document(
    video: str, info: VideoInfo, objects: Sequence[int], frames: list[dict[str, object]]
) -> dict[str, object]:
    """The whole ``masks.json``."""
    return {
        "video": video,  # the source file's name
        "width": info.width,
        "height": info.height,
        "fps": float(info.fps),
        "objects": list(objects),  # ids given in the masks
        "frames": frames,
    }
