"""Masks as clients send them (index PNG, COCO RLE, binary PNGs per object, in JSON) →
uint8 H×W ids, bounded before anything large is decoded."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from server.tasks.segmentation.masks import (
    MaskError,
    check_mask_pixels,
    decode_binary_png,
    decode_index_png,
    decode_rle,
    merge_objects,
)

ObjectId = Annotated[int, Field(ge=1, le=255)]


class IndexPngMask(BaseModel):
    """One palette or grayscale PNG whose pixel values are object ids."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["png"]
    data: str = Field(description="the PNG file, base64")


class RleMask(BaseModel):
    """COCO RLE per object (compressed string or uncompressed counts)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["rle"]
    objects: dict[str, dict[str, Any]] = Field(description='{"3": {"size": [h, w], "counts": ...}}')


class BinaryPngMask(BaseModel):
    """One binary PNG per object (nonzero = the object)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["binary_png"]
    objects: dict[str, str] = Field(description='{"3": "<base64 PNG>"}')


MaskSpec = Annotated[IndexPngMask | RleMask | BinaryPngMask, Field(discriminator="format")]


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MaskError("invalid_mask", f"{what} is not valid base64: {exc}") from exc


def _object_id(key: str) -> int:
    # why the length first: int() of thousands of digits raises, and is slow before it does
    if not (key.isdigit() and len(key) <= 3) or not 1 <= int(key) <= 255:
        raise MaskError("invalid_object_id", f"object ids are 1..255, got {key[:20]!r}")
    return int(key)


def decode_mask(
    spec: IndexPngMask | RleMask | BinaryPngMask,
    size: tuple[int, int] | None,
    max_pixels: int,
    max_objects: int,
) -> tuple[np.ndarray, list[int] | None]:
    """A wire mask → (uint8 H×W ids, the ids it sets: None for "every id present").

    ``size``: the session's frame size; before its first frame (None) the mask's own size
    is trusted only up to ``max_pixels``, so a small message cannot ask for a huge array; and
    no more objects than the session tracks are decoded."""
    if isinstance(spec, IndexPngMask):
        return decode_index_png(_b64(spec.data, "mask data"), size, max_pixels), None
    if len(spec.objects) > max_objects:
        raise MaskError(
            "too_many_objects",
            f"the mask names {len(spec.objects)} objects; the session tracks at most {max_objects}",
        )
    if isinstance(spec, RleMask):
        masks = {}
        for key, rle in spec.objects.items():
            rle_size = size or _declared_size(rle, max_pixels)
            masks[_object_id(key)] = decode_rle(rle, rle_size)
    else:
        masks = {
            _object_id(k): decode_binary_png(_b64(v, f"object {k}"), size, max_pixels)
            for k, v in spec.objects.items()
        }
    if not masks:
        raise MaskError("invalid_mask", "the mask names no objects")
    shape = next(iter(masks.values())).shape
    return merge_objects(masks, (int(shape[0]), int(shape[1]))), sorted(masks)


def _declared_size(rle: dict[str, Any], max_pixels: int) -> tuple[int, int]:
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise MaskError("invalid_rle", f"RLE size must be [height, width], got {size!r}")
    check_mask_pixels((int(size[0]), int(size[1])), max_pixels, "the RLE mask")
    return int(size[0]), int(size[1])
