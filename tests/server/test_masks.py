"""The mask codecs: index and binary PNGs, COCO RLE and probability PNGs, in and out, and a
clear ``MaskError`` for every kind of bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from models.images import voc_palette
from server.tasks.segmentation.masks import (
    MaskError,
    decode_binary_png,
    decode_index_png,
    decode_rle,
    encode_index_png,
    encode_probability_png,
    encode_rle,
    encode_rles,
    merge_objects,
)

# A 2×3 mask whose run lengths differ between row- and column-major order:
#   0 1 1
#   0 0 1
# Column by column it reads 0 0 | 1 0 | 1 1, so COCO's counts are [2, 1, 1, 2]
# (row by row it would be [1, 2, 2, 1]).
SMALL = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
SMALL_COUNTS = [2, 1, 1, 2]
# Compressed by hand: runs 0..2 are written as is ('0' + n), run 3 as the delta from run 1.
SMALL_STRING = "2111"


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def random_index(height: int, width: int, ids: int, seed: int) -> np.ndarray:
    """uint8 H×W with ids 0..ids, in blobs so runs are of varied lengths."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, ids + 1, (height // 4 + 1, width // 4 + 1))
    return np.kron(coarse, np.ones((4, 4), dtype=np.int64))[:height, :width].astype(np.uint8)


def fortran_counts(binary: np.ndarray) -> list[int]:
    """binary: 0/1 H×W → COCO's uncompressed counts, computed independently of the masks module."""
    flat = binary.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = [0, *changes.tolist(), flat.size]
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def assert_error(exc: pytest.ExceptionInfo[MaskError], code: str, *fragments: str) -> None:
    assert exc.value.code == code
    for fragment in fragments:
        assert fragment in str(exc.value), str(exc.value)


# ---------------------------------------------------------------------------- index PNG


def test_index_png_round_trip_uses_the_davis_palette() -> None:
    index = random_index(37, 53, ids=6, seed=0)
    index[0, 0] = 255
    data = encode_index_png(index)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "P"
        assert image.getpalette() == voc_palette()
    np.testing.assert_array_equal(decode_index_png(data, (37, 53)), index)


def test_index_png_from_grayscale_and_16_bit() -> None:
    index = random_index(20, 30, ids=3, seed=1) * 40
    np.testing.assert_array_equal(decode_index_png(png(Image.fromarray(index)), (20, 30)), index)
    wide = Image.fromarray(index.astype(np.uint16))
    assert wide.mode == "I;16"
    np.testing.assert_array_equal(decode_index_png(png(wide), None), index)


def test_index_png_from_gray_rgb_uses_the_gray_value() -> None:
    index = random_index(16, 24, ids=4, seed=2)
    rgb = np.repeat(index[..., None], 3, axis=2)
    np.testing.assert_array_equal(decode_index_png(png(Image.fromarray(rgb)), (16, 24)), index)
    rgba = np.concatenate([rgb, np.full((16, 24, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_index_png(png(Image.fromarray(rgba)), (16, 24)), index)


def test_index_png_rejects_a_colour_rgb_png() -> None:
    rgb = np.zeros((8, 10, 3), dtype=np.uint8)
    rgb[3, 4] = (128, 0, 0)  # DAVIS's colour for object 1, which an RGB PNG cannot say
    with pytest.raises(MaskError) as exc:
        decode_index_png(png(Image.fromarray(rgb)), (8, 10))
    assert_error(exc, "invalid_mask", "RGB", "(128, 0, 0)", "row 3, column 4", "palette")


def test_index_png_rejects_values_above_255() -> None:
    wide = Image.fromarray(np.full((4, 4), 300, dtype=np.uint16))
    with pytest.raises(MaskError) as exc:
        decode_index_png(png(wide), (4, 4))
    assert_error(exc, "invalid_mask", "0..255", "300")


def test_index_png_size_mismatch_names_both_sizes() -> None:
    data = encode_index_png(np.zeros((48, 64), dtype=np.uint8))
    with pytest.raises(MaskError) as exc:
        decode_index_png(data, (480, 640))
    assert_error(exc, "mask_size_mismatch", "48×64", "480×640")


def with_garbage_pixels(data: bytes) -> bytes:
    """A PNG whose IDAT holds garbage (not zlib) under a valid CRC: only decoding finds out."""
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack_from(">I", data, start)
    body = b"IDAT" + bytes(range(256))[:length].ljust(length, b"\x07")
    chunk = struct.pack(">I", length) + body + struct.pack(">I", zlib.crc32(body))
    return data[:start] + chunk + data[start + 12 + length :]


def test_size_is_checked_from_the_header_before_pixels_are_decoded() -> None:
    garbage = with_garbage_pixels(encode_index_png(random_index(40, 50, ids=3, seed=3)))
    with pytest.raises(MaskError) as exc:
        decode_index_png(garbage, (41, 50))
    assert_error(exc, "mask_size_mismatch", "40×50", "41×50")
    with pytest.raises(MaskError) as exc:
        decode_index_png(garbage, (40, 50))
    assert_error(exc, "invalid_mask", "corrupt PNG")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"GIF89a this is not a PNG at all", "not a PNG"),
        (b"\xff\xd8\xff\xe0 a JPEG header", "not a PNG"),
    ],
)
def test_non_png_bytes(data: bytes, fragment: str) -> None:
    for decode in (decode_index_png, decode_binary_png):
        with pytest.raises(MaskError) as exc:
            decode(data, None)
        assert_error(exc, "invalid_mask", fragment)


def test_truncated_png_at_every_length() -> None:
    index = random_index(40, 50, ids=5, seed=4)
    data = encode_index_png(index)
    for length in range(8, len(data), 7):
        with pytest.raises(MaskError) as exc:
            decode_index_png(data[:length], (40, 50))
        assert_error(exc, "invalid_mask", "truncated PNG", f"byte {length}")


def test_every_single_byte_corruption_is_an_error() -> None:
    """Pillow alone decodes many corruptions of the pixel data to a wrong mask, silently."""
    data = encode_index_png(random_index(40, 50, ids=5, seed=5))
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x5A
        with pytest.raises(MaskError) as exc:
            decode_index_png(bytes(corrupt), (40, 50))
        assert exc.value.code == "invalid_mask"


def test_corrupt_png_names_the_chunk() -> None:
    data = bytearray(encode_index_png(np.ones((8, 8), dtype=np.uint8)))
    data[data.index(b"IDAT") + 6] ^= 0xFF
    with pytest.raises(MaskError) as exc:
        decode_index_png(bytes(data), (8, 8))
    assert_error(exc, "invalid_mask", "corrupt PNG", "CRC mismatch", "'IDAT'")


# ---------------------------------------------------------------------------- binary PNG


def test_binary_png_round_trip_in_every_mode() -> None:
    binary = (random_index(21, 35, ids=1, seed=6) != 0).astype(np.uint8)
    gray = binary * 200
    rgb = np.zeros((21, 35, 3), dtype=np.uint8)
    rgb[..., 2] = binary * 7  # only one channel set still marks the object
    rgba = np.concatenate([rgb, np.full((21, 35, 1), 0, np.uint8)], axis=2)  # alpha ignored
    images = {
        "L": Image.fromarray(gray),
        "1": Image.fromarray(binary.astype(bool)),
        "P": Image.frombytes("P", (35, 21), binary.tobytes()),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(rgba),
    }
    images["P"].putpalette(voc_palette())
    for mode, image in images.items():
        assert image.mode == mode
        decoded = decode_binary_png(png(image), (21, 35))
        assert decoded.dtype == np.uint8, mode
        np.testing.assert_array_equal(decoded, binary, err_msg=mode)


def test_binary_png_size_mismatch() -> None:
    with pytest.raises(MaskError) as exc:
        decode_binary_png(png(Image.fromarray(np.zeros((10, 20), np.uint8))), (20, 10))
    assert_error(exc, "mask_size_mismatch", "10×20", "20×10")


def test_binary_png_truncated() -> None:
    data = png(Image.fromarray(np.eye(30, dtype=np.uint8) * 255))
    with pytest.raises(MaskError) as exc:
        decode_binary_png(data[: len(data) // 2], (30, 30))
    assert_error(exc, "invalid_mask", "binary mask", "truncated PNG")


# ---------------------------------------------------------------------------- RLE in


# why: pycocotools 2.0.x passes copy=False to np.array in decode, which numpy 2 deprecates
DECODE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_rle_column_major_order_on_a_hand_computed_example() -> None:
    size = [2, 3]
    np.testing.assert_array_equal(decode_rle({"size": size, "counts": SMALL_COUNTS}, (2, 3)), SMALL)
    np.testing.assert_array_equal(decode_rle({"size": size, "counts": SMALL_STRING}, (2, 3)), SMALL)
    assert encode_rle(SMALL) == {"size": [2, 3], "counts": SMALL_STRING}
    # and pycocotools agrees on both forms
    compressed = coco_mask.frPyObjects({"size": size, "counts": SMALL_COUNTS}, 2, 3)
    assert compressed["counts"].decode() == SMALL_STRING
    np.testing.assert_array_equal(coco_mask.decode(compressed), SMALL)


def test_rle_starting_with_object_pixels_has_a_zero_first_run() -> None:
    binary = np.array([[1, 0], [1, 1]], dtype=np.uint8)  # column-major 1 1 0 1
    np.testing.assert_array_equal(decode_rle({"size": [2, 2], "counts": [0, 2, 1, 1]}, (2, 2)), binary)


@pytest.mark.filterwarnings(DECODE_WARNING)
@pytest.mark.parametrize("seed", range(6))
def test_rle_round_trips_against_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (int(n) for n in rng.integers(1, 90, 2))
    binary = (random_index(height, width, ids=1, seed=seed) != 0).astype(np.uint8)
    if seed == 0:
        binary[:] = 0  # an empty object
    if seed == 1:
        binary[:] = 1  # a full one
    theirs = coco_mask.encode(np.asfortranarray(binary))
    ours = encode_rle(binary)
    assert ours == {"size": [height, width], "counts": theirs["counts"].decode("ascii")}
    np.testing.assert_array_equal(coco_mask.decode(theirs), binary)
    np.testing.assert_array_equal(decode_rle(ours, (height, width)), binary)
    uncompressed = {"size": [height, width], "counts": fortran_counts(binary)}
    np.testing.assert_array_equal(decode_rle(uncompressed, (height, width)), binary)
    from_counts = coco_mask.frPyObjects(uncompressed, height, width)
    assert from_counts["counts"].decode("ascii") == ours["counts"]


def test_rle_with_long_runs_uses_multi_character_values() -> None:
    binary = np.zeros((300, 200), dtype=np.uint8)
    binary[100:250, 50:60] = 1
    rle = encode_rle(binary)
    assert any((ord(char) - 48) & 0x20 for char in rle["counts"])  # "more follows" was used
    np.testing.assert_array_equal(decode_rle(rle, (300, 200)), binary)


@pytest.mark.parametrize(
    ("counts", "fragments"),
    [
        ([2, 1, 1], ("add up to 4 pixels", "h·w = 6")),  # too few
        ([2, 1, 1, 3], ("add up to 7 pixels", "h·w = 6")),  # too many
        ([], ("add up to 0 pixels", "h·w = 6")),
        ([2, -1, 3, 2], ("counts[1] is -1", "non-negative")),
        ([2, 1.5, 1, 1.5], ("counts[1] is 1.5", "integers")),
        ([2, True, 1, 2], ("counts[1] is True", "integers")),
        (["2", "1"], ("counts[0] is '2'", "integers")),
    ],
)
def test_uncompressed_rle_errors(counts: list[object], fragments: tuple[str, ...]) -> None:
    with pytest.raises(MaskError) as exc:
        decode_rle({"size": [2, 3], "counts": counts}, (2, 3))
    assert_error(exc, "invalid_rle", *fragments)


@pytest.mark.parametrize(
    ("counts", "fragments"),
    [
        ("", ("add up to 0 pixels", "h·w = 6")),
        ("21", ("add up to 3 pixels", "h·w = 6")),  # too few
        ("2119", ("more than h·w = 6",)),  # the fourth run is 9 + 1: too many
        ("21A", ("run 2 decodes to -15",)),  # 'A' is a negative value
        ("211h", ("ends in the middle of a run",)),  # 'h' says "more follows"
        ("2{11", ("'{' at 1", "'0'..'o'")),
        ("21 1", ("' ' at 2",)),
        ("21\x7f1", ("'\\x7f' at 2",)),
    ],
)
def test_malformed_compressed_rle_is_an_error(counts: str, fragments: tuple[str, ...]) -> None:
    """pycocotools decodes all of these without complaint, to masks that are wrong."""
    with pytest.raises(MaskError) as exc:
        decode_rle({"size": [2, 3], "counts": counts}, (2, 3))
    assert_error(exc, "invalid_rle", "compressed RLE", *fragments)


def test_a_huge_malformed_compressed_rle_stops_early() -> None:
    with pytest.raises(MaskError) as exc:
        decode_rle({"size": [2, 3], "counts": "9" * 5_000_000}, (2, 3))
    assert_error(exc, "invalid_rle", "more than h·w = 6")


def test_rle_size_mismatch_names_both_sizes() -> None:
    with pytest.raises(MaskError) as exc:
        decode_rle({"size": [3, 2], "counts": SMALL_COUNTS}, (2, 3))
    assert_error(exc, "mask_size_mismatch", "RLE is 3×2", "2×3")


@pytest.mark.parametrize("size", [[2], [2, 3, 1], [0, 3], [2, -3], ["2", 3], [True, 3], 6, None])
def test_rle_size_must_be_two_positive_ints(size: object) -> None:
    with pytest.raises(MaskError) as exc:
        decode_rle({"size": size, "counts": SMALL_COUNTS}, (2, 3))
    assert_error(exc, "invalid_rle", '"size" must be [height, width]', repr(size))


@pytest.mark.parametrize(
    ("rle", "fragment"),
    [
        ({"counts": SMALL_COUNTS}, '"size": [h, w] and "counts"'),
        ({"size": [2, 3]}, '"size": [h, w] and "counts"'),
        ([2, 1, 1, 2], '"size": [h, w] and "counts"'),
        ({"size": [2, 3], "counts": 6}, "got int"),
        ({"size": [2, 3], "counts": {"0": 2}}, "got dict"),
    ],
)
def test_rle_shape_errors(rle: object, fragment: str) -> None:
    with pytest.raises(MaskError) as exc:
        decode_rle(rle, (2, 3))  # type: ignore[arg-type]
    assert_error(exc, "invalid_rle", fragment)


# ---------------------------------------------------------------------------- merge


def test_merge_objects_into_an_index_mask() -> None:
    index = random_index(30, 40, ids=4, seed=7)
    masks = {object_id: (index == object_id).astype(np.uint8) for object_id in (1, 2, 3, 4)}
    masks[200] = np.zeros((30, 40), dtype=np.uint8)  # given, but with no pixels
    merged = merge_objects(masks, (30, 40))
    assert merged.dtype == np.uint8
    np.testing.assert_array_equal(merged, index)


def test_merge_of_no_objects_is_all_background() -> None:
    np.testing.assert_array_equal(merge_objects({}, (3, 5)), np.zeros((3, 5), np.uint8))


def test_rles_to_index_and_back() -> None:
    index = random_index(25, 33, ids=3, seed=8)
    rles = encode_rles(index, [1, 2, 3, 9])
    assert list(rles) == ["1", "2", "3", "9"]
    binaries = {int(key): decode_rle(rle, (25, 33)) for key, rle in rles.items()}
    assert not binaries[9].any()
    np.testing.assert_array_equal(merge_objects(binaries, (25, 33)), index)


def test_overlapping_masks_name_the_ids_and_pixel_count() -> None:
    one = np.zeros((6, 6), dtype=np.uint8)
    one[:3, :3] = 1
    three = np.zeros((6, 6), dtype=bool)
    three[2:4, 1:3] = True  # overlaps object 1 on row 2, columns 1..2
    with pytest.raises(MaskError) as exc:
        merge_objects({3: three, 1: one}, (6, 6))
    assert_error(exc, "overlapping_masks", "object 3 overlaps object(s) 1 on 2 pixels")


@pytest.mark.parametrize("object_id", [0, 256, -1, True])
def test_object_ids_must_be_1_to_255(object_id: int) -> None:
    masks = {object_id: np.zeros((2, 2), np.uint8)}
    with pytest.raises(MaskError) as exc:
        merge_objects(masks, (2, 2))
    assert_error(exc, "invalid_object_id", repr(object_id), "1..255")
    with pytest.raises(MaskError) as exc:
        encode_rles(np.zeros((2, 2), np.uint8), [object_id])
    assert_error(exc, "invalid_object_id", repr(object_id))


def test_merge_size_mismatch_names_the_object() -> None:
    with pytest.raises(MaskError) as exc:
        merge_objects({5: np.zeros((4, 6), np.uint8)}, (6, 4))
    assert_error(exc, "mask_size_mismatch", "object 5's mask is 4×6", "6×4")


# ---------------------------------------------------------------------------- outputs


def test_probability_png() -> None:
    prob = np.array([[0.0, 0.5, 1.0], [0.2, 1 / 255 * 0.49, 0.999]], dtype=np.float32)
    data = encode_probability_png(prob)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "L"
        gray = np.asarray(image)
    expected = [[round(float(p) * 255) for p in row] for row in prob.astype(np.float64)]
    assert gray.tolist() == expected
    assert gray.tolist() == [[0, 128, 255], [51, 0, 255]]


@pytest.mark.parametrize("bad", [np.float32(1.5), np.float32(-0.1), np.float32("nan")])
def test_probability_out_of_range(bad: np.float32) -> None:
    prob = np.zeros((3, 3), dtype=np.float32)
    prob[1, 1] = bad
    with pytest.raises(MaskError) as exc:
        encode_probability_png(prob)
    assert_error(exc, "invalid_probability", "[0, 1]")


def test_encoders_check_their_arrays() -> None:
    with pytest.raises(MaskError) as exc:
        encode_index_png(np.zeros((4, 4), dtype=np.int32))
    assert_error(exc, "invalid_mask", "uint8 H×W", "int32")
    with pytest.raises(MaskError) as exc:
        encode_rle(np.zeros((4, 4, 2), dtype=np.uint8))
    assert_error(exc, "invalid_mask", "(4, 4, 2)")
