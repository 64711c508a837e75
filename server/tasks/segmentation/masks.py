"""Object masks in and out for segmentation sessions: index PNGs, per-object binary PNGs
and COCO RLE ↔ uint8 H×W arrays. Object ids are the user's, 1..255; 0 is background.

Sizes are ``(height, width)`` throughout, as numpy shapes and COCO's ``"size": [h, w]`` are.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from models import mask_files
from models.images import voc_palette
from models.mask_files import Rle

Size = tuple[int, int]  # (height, width)

MAX_OBJECT_ID = 255  # why: index masks are uint8 and 0 is background
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY_MODES = ("L", "1", "I", "I;16")  # single-channel PNG modes whose values are the ids


class MaskError(ValueError):
    """Input that is not an acceptable mask; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def status(self) -> int:
        """422 for a well-formed mask of the wrong size, 400 for bytes that are not a mask."""
        return 422 if self.code == "mask_size_mismatch" else 400


# ---------------------------------------------------------------------------- inputs


def decode_index_png(data: bytes, size: Size | None, max_pixels: int | None = None) -> np.ndarray:
    """An index PNG → mask: uint8 H×W of object ids, 0 for background.

    Palette ("P") PNGs give their indices and grayscale ones their values; RGB/RGBA PNGs are
    accepted only when every pixel is gray (R == G == B), since colours are ambiguous as ids.
    Alpha is ignored. ``size`` is the expected (height, width), checked from the header;
    without one, ``max_pixels`` bounds it before any pixel is decoded.
    """
    image = _open_png(data, size, "mask", max_pixels)
    if image.mode == "P":
        return np.array(image, dtype=np.uint8)
    if image.mode in _GRAY_MODES:
        return _ids_from_gray(np.asarray(image))
    if image.mode in ("LA", "PA"):
        return _ids_from_gray(np.asarray(image)[..., 0])
    if image.mode in ("RGB", "RGBA"):
        return _ids_from_rgb(np.asarray(image)[..., :3], image.mode)
    raise MaskError("invalid_mask", f"mask PNG has unsupported mode {image.mode}; send a palette PNG")


def decode_binary_png(data: bytes, size: Size | None, max_pixels: int | None = None) -> np.ndarray:
    """One object's PNG → binary: uint8 H×W, 1 where the object is.

    Any mode: a nonzero value (palette index, gray level, or any of R, G, B) marks the object;
    alpha is ignored. ``size`` is the expected (height, width), checked from the header.
    """
    image = _open_png(data, size, "binary mask", max_pixels)
    pixels = np.asarray(image)
    if image.mode in ("LA", "RGBA", "PA"):
        pixels = pixels[..., :-1]  # drop alpha
    nonzero = pixels != 0
    if nonzero.ndim == 3:
        nonzero = nonzero.any(axis=2)
    return nonzero.astype(np.uint8)


def decode_rle(rle: Mapping[str, object], size: Size) -> np.ndarray:
    """One object's COCO RLE → binary: uint8 H×W (0/1).

    ``{"size": [h, w], "counts": [int, ...]}`` is uncompressed: run lengths in column-major
    (Fortran) order, alternating and starting with a run of zeros. ``"counts": "string"`` is
    pycocotools' compressed form. Either way the runs must add up to exactly h·w. ``size``,
    the expected (height, width), is required: a few characters of RLE can claim any size.
    """
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise MaskError("invalid_rle", 'an RLE must be an object with "size": [h, w] and "counts"')
    rle_size = _rle_size(rle["size"])
    _check_size(rle_size, size, "RLE")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = _runs_from_string(counts, rle_size)
    elif isinstance(counts, list):
        runs = _runs_from_list(counts, rle_size)
    else:
        raise MaskError(
            "invalid_rle",
            f"RLE counts must be a list of run lengths or a string, got {type(counts).__name__}",
        )
    return _mask_from_runs(runs, rle_size)


def merge_objects(masks: Mapping[int, np.ndarray], size: Size) -> np.ndarray:
    """Per-object binaries (id → uint8 or bool H×W, nonzero = object) → mask: uint8 H×W of ids.

    Overlapping objects are an error rather than resolved silently: which one the user meant
    cannot be known. An object with no pixels is allowed.
    """
    index = np.zeros(size, dtype=np.uint8)
    for object_id in sorted(masks, key=_check_object_id):
        binary = masks[object_id]
        if binary.ndim != 2:
            raise MaskError("invalid_mask", f"object {object_id}: mask must be H×W, got shape {binary.shape}")
        _check_size((binary.shape[0], binary.shape[1]), size, f"object {object_id}'s mask")
        pixels = binary != 0
        _check_no_overlap(index, pixels, object_id)
        index[pixels] = object_id
    return index


# ---------------------------------------------------------------------------- outputs


def encode_index_png(mask: np.ndarray) -> bytes:
    """mask: uint8 H×W of ids → a palette PNG with the DAVIS/VOC colours, indices = ids."""
    _check_uint8_2d(mask, "mask")
    height, width = mask.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask).tobytes())
    image.putpalette(voc_palette())
    return _png_bytes(image)


def encode_rle(binary: np.ndarray) -> Rle:
    """binary: bool or uint8 H×W (nonzero = object) → COCO compressed RLE, JSON-ready:
    ``{"size": [h, w], "counts": str}``."""
    if binary.ndim != 2:
        raise MaskError("invalid_mask", f"a binary mask must be H×W, got shape {binary.shape}")
    return mask_files.encode_rle(binary)


def encode_rles(index: np.ndarray, object_ids: Sequence[int]) -> dict[str, Rle]:
    """index: uint8 H×W of ids → {str(id): compressed RLE} for each id, empty ones included."""
    _check_uint8_2d(index, "index mask")
    return {str(object_id): encode_rle(index == _check_object_id(object_id)) for object_id in object_ids}


def encode_probability_png(prob: np.ndarray) -> bytes:
    """prob: float H×W in [0, 1] → an 8-bit grayscale PNG, value round(p·255)."""
    if prob.ndim != 2:
        raise MaskError("invalid_probability", f"a probability map must be H×W, got shape {prob.shape}")
    in_range = np.isfinite(prob).all() and prob.min(initial=0.0) >= 0.0 and prob.max(initial=0.0) <= 1.0
    if not in_range:
        raise MaskError("invalid_probability", "probabilities must be finite and within [0, 1]")
    gray = np.rint(prob.astype(np.float64) * 255.0).astype(np.uint8)  # rint: half to even, as round()
    return _png_bytes(Image.fromarray(gray))


# ---------------------------------------------------------------------------- PNG helpers


def _open_png(data: bytes, size: Size | None, what: str, max_pixels: int | None = None) -> Image.Image:
    """PNG bytes → a loaded image, its size checked from the header before any pixel is read."""
    _check_png_chunks(data, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            if size is not None:
                _check_size((image.height, image.width), size, what)
            elif max_pixels is not None:
                check_mask_pixels((image.height, image.width), max_pixels, what)
            image.load()
    except MaskError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MaskError("invalid_mask", f"{what}: image too large ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise MaskError("invalid_mask", f"{what}: corrupt PNG, its header chunks are unreadable") from exc
    except Exception as exc:  # PIL raises many types for bad pixel data; all mean "corrupt"
        raise MaskError("invalid_mask", f"{what}: corrupt PNG ({type(exc).__name__}: {exc})") from exc
    return image


def check_mask_pixels(size: Size, max_pixels: int, what: str) -> None:
    """A mask for frames not seen yet: at most as large as a frame may be."""
    if size[0] * size[1] > max_pixels:
        raise MaskError(
            "mask_too_large",
            f"{what} is {size[1]}×{size[0]}, more than the {max_pixels} pixels a frame may have",
        )


def _check_png_chunks(data: bytes, what: str) -> None:
    """Walk the chunks up to IEND checking each CRC: Pillow skips the CRC of pixel data, so a
    flipped byte there would otherwise decode to a silently wrong mask."""
    if not data:
        raise MaskError("invalid_mask", f"{what}: empty data, expected PNG bytes")
    if not data.startswith(_PNG_SIGNATURE):
        raise MaskError("invalid_mask", f"{what}: not a PNG (the 8-byte PNG signature is missing)")
    view, position = memoryview(data), len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            break
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[position + 4 : end]) != crc:
            name = kind.decode("latin-1")
            raise MaskError(
                "invalid_mask", f"{what}: corrupt PNG, CRC mismatch in chunk {name!r} at byte {position}"
            )
        if kind == b"IEND":
            return
        position = end + 4
    raise MaskError(
        "invalid_mask", f"{what}: truncated PNG, the data ends at byte {len(data)} before the IEND chunk"
    )


def _ids_from_gray(values: np.ndarray) -> np.ndarray:
    """values: integer or bool H×W (16-bit PNGs included) → uint8 H×W ids."""
    largest = int(values.max(initial=0))
    if largest > MAX_OBJECT_ID:
        raise MaskError("invalid_mask", f"mask values must be object ids 0..255, found {largest}")
    return values.astype(np.uint8)


def _ids_from_rgb(rgb: np.ndarray, mode: str) -> np.ndarray:
    """rgb: uint8 H×W×3 → its gray level as ids, or an error at the first coloured pixel."""
    coloured = (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])
    if coloured.any():
        row, col = (int(i) for i in np.argwhere(coloured)[0])
        colour = tuple(int(c) for c in rgb[row, col])
        raise MaskError(
            "invalid_mask",
            f"mask PNG is {mode} with colour {colour} at row {row}, column {col}: colours are "
            "ambiguous as object ids; send a palette (P) or grayscale (L) PNG whose values are the ids",
        )
    return np.array(rgb[..., 0], dtype=np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    # why level 1: lossless either way, and several times faster than the default 6 (server/media.py)
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


# ---------------------------------------------------------------------------- RLE helpers


def _rle_size(value: object) -> Size:
    if isinstance(value, list | tuple) and len(value) == 2:
        height, width = value
        if _positive_int(height) and _positive_int(width):
            return height, width
    raise MaskError(
        "invalid_rle", f'RLE "size" must be [height, width], two positive integers; got {_quoted(value)}'
    )


def _quoted(value: object) -> str:
    """What the client sent, short: a 15 MB list must not come back in the error (issue 14)."""
    text = (
        repr(value)
        if not isinstance(value, int) or abs(value) < 10**20
        else f"an integer of {len(str(abs(value)))} digits"
    )
    return text if len(text) <= 80 else f"{text[:80]}…"


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _runs_from_list(counts: list[object], size: Size) -> list[int]:
    """Uncompressed counts: non-negative ints adding up to h·w."""
    runs: list[int] = []
    total_pixels = size[0] * size[1]
    for i, count in enumerate(counts):
        if not isinstance(count, int) or isinstance(count, bool):
            raise MaskError(
                "invalid_rle", f"RLE counts[{i}] is {_quoted(count)}; run lengths must be integers"
            )
        if not 0 <= count <= total_pixels:
            raise MaskError(
                "invalid_rle",
                f"RLE counts[{i}] is {_quoted(count)}; run lengths must be non-negative and at most "
                f"h·w = {total_pixels}",
            )
        runs.append(count)
    _check_total(runs, size, "RLE counts")
    return runs


MAX_RUN_BITS = 40  # why: 8 groups of 5 bits hold any run of a frame VIDSERVE_MAX_PIXELS allows


def _runs_from_string(counts: str, size: Size) -> list[int]:
    """Compressed counts → run lengths, with every check pycocotools' rleFrString skips.

    Each run is a little-endian series of 5-bit groups, char = group + 48, bit 0x20 = "more
    follows", bit 0x10 of the last group = negative; from the fourth run on, the value is a
    delta from the run two before (pycocotools maskApi.c, rleToString / rleFrString).
    """
    total_pixels = size[0] * size[1]
    runs: list[int] = []
    value = shift = total = 0
    for position, char in enumerate(counts):
        group = ord(char) - 48
        if not 0 <= group < 64:
            raise MaskError(
                "invalid_rle",
                f"malformed compressed RLE: character {char!r} at {position} is not in '0'..'o'",
            )
        value |= (group & 0x1F) << shift
        shift += 5
        if shift > MAX_RUN_BITS:  # why: endless continuation groups would build an unbounded integer
            raise MaskError(
                "invalid_rle", f"malformed compressed RLE: run {len(runs)} is longer than any mask"
            )
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise MaskError("invalid_rle", f"malformed compressed RLE: run {len(runs)} decodes to {value}")
        runs.append(value)
        total += value
        value = shift = 0
        if total > total_pixels:  # why here: a long bad string stops early
            raise MaskError(
                "invalid_rle",
                f"compressed RLE counts add up to more than h·w = {total_pixels} pixels "
                f"(size {size[0]}×{size[1]})",
            )
    if shift:
        raise MaskError("invalid_rle", "malformed compressed RLE: the string ends in the middle of a run")
    _check_total(runs, size, "compressed RLE counts")
    return runs


def _check_total(runs: list[int], size: Size, what: str) -> None:
    total, expected = sum(runs), size[0] * size[1]
    if total != expected:
        raise MaskError(
            "invalid_rle",
            f"{what} add up to {total} pixels, but size {size[0]}×{size[1]} needs h·w = {expected}",
        )


def _mask_from_runs(runs: list[int], size: Size) -> np.ndarray:
    """Runs (zeros first, column-major) adding up to h·w → binary: uint8 H×W."""
    height, width = size
    values = (np.arange(len(runs)) % 2).astype(np.uint8)
    column_major = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return np.ascontiguousarray(column_major.reshape(width, height).T)


# ---------------------------------------------------------------------------- checks


def _check_size(actual: Size, expected: Size, what: str) -> None:
    """Both as (height, width)."""
    if tuple(actual) != tuple(expected):
        raise MaskError(
            "mask_size_mismatch",
            f"{what} is {actual[0]}×{actual[1]} (height×width) but the expected size is "
            f"{expected[0]}×{expected[1]}",
        )


def _check_object_id(object_id: int) -> int:
    valid = isinstance(object_id, int | np.integer) and not isinstance(object_id, bool)
    if not valid or not 1 <= object_id <= MAX_OBJECT_ID:
        raise MaskError("invalid_object_id", f"object id {object_id!r} is not in 1..255 (0 is background)")
    return int(object_id)


def _check_no_overlap(index: np.ndarray, pixels: np.ndarray, object_id: int) -> None:
    """index: uint8 H×W so far; pixels: bool H×W of the object being added."""
    taken = index[pixels]
    overlap = taken[taken != 0]
    if overlap.size:
        others = ", ".join(str(int(i)) for i in np.unique(overlap))
        raise MaskError(
            "overlapping_masks",
            f"object {object_id} overlaps object(s) {others} on {overlap.size} pixels; "
            "each pixel may belong to one object only",
        )


def _check_uint8_2d(mask: np.ndarray, what: str) -> None:
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise MaskError("invalid_mask", f"{what} must be uint8 H×W, got {mask.dtype} {mask.shape}")
