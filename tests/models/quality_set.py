"""A small interpolation quality set: real photographs moved by known synthetic motion.

Each case is a triple (frame0, truth, frame1) cut from one photograph shipped inside
scikit-image (no download), with motion whose middle frame is known exactly:

- translation: integer-offset crops at −d, 0, +d, so all three are untouched pixels and
  the truth is the middle crop;
- zoom: three views resampled about one centre at scales s·(1−e), s, s·(1+e), all made by
  the same resampler (PIL bicubic, antialiased, from the full-resolution photo) so the truth
  is filtered exactly as the outer frames are. The scales step arithmetically, not as 1/z, z,
  so that every point moves linearly and the t=0.5 frame is exactly the middle scale.

The photographs and their licences, as scikit-image's ``skimage.data`` docstrings give them:

- astronaut: Eileen Collins, NASA Great Images; no known copyright restrictions, public domain.
- coffee: courtesy of Pikolo Espresso Bar; CC0 by the photographer (Rachel Michetti).
- chelsea: Chelsea the cat; CC0 by the photographer (Stefan van der Walt).
- rocket: DSCOVR launch on Falcon 9, SpaceX; released by SpaceX into the public domain.

Everything is deterministic: fixed photos, fixed offsets, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage import data

from models.rife.inference import Interpolator, to_uint8

# why this size: small enough that RIFE v4.0 eager on 2 CPU cores takes well under a second per case
CROP_HW = (192, 256)

PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": data.astronaut,  # 512×512, public domain
    "coffee": data.coffee,  # 400×600, CC0
    "chelsea": data.chelsea,  # 300×451, CC0
    "rocket": data.rocket,  # 427×640, public domain
}


@dataclass(frozen=True)
class Case:
    """One quality case: RIFE at t=0.5 on (frame0, frame1) should reproduce ``truth``."""

    name: str
    motion: str  # human-readable description of the motion from frame0 to frame1
    frame0: np.ndarray  # uint8 H×W×3 RGB
    truth: np.ndarray  # uint8 H×W×3 RGB, the exact middle frame
    frame1: np.ndarray  # uint8 H×W×3 RGB


@dataclass(frozen=True)
class CaseResult:
    """PSNR against the truth of RIFE's middle frame and of the 50/50 blend, in dB."""

    case: Case
    psnr_rife: float
    psnr_blend: float

    @property
    def gain(self) -> float:
        return self.psnr_rife - self.psnr_blend


def load_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as uint8 H×W×3 RGB (grey ones are repeated to three channels)."""
    image = np.asarray(PHOTOS[name]())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


def crop(image: np.ndarray, top: int, left: int, hw: tuple[int, int] = CROP_HW) -> np.ndarray:
    """The hw crop of image at (top, left); it must lie wholly inside the image."""
    height, width = hw
    if top < 0 or left < 0 or top + height > image.shape[0] or left + width > image.shape[1]:
        raise ValueError(f"crop {hw} at ({top}, {left}) leaves the {image.shape[:2]} image")
    return image[top : top + height, left : left + width].copy()


def translation_case(name: str, photo: str, centre: tuple[int, int], step: tuple[int, int]) -> Case:
    """Crops centred at centre − step, centre, centre + step (step = (dy, dx) in pixels).

    The crop window moves by +step per half-step, so the content moves by −step: over the
    whole pair it is displaced by −2·step.
    """
    image = load_photo(photo)
    (cy, cx), (dy, dx) = centre, step
    top, left = cy - CROP_HW[0] // 2, cx - CROP_HW[1] // 2
    frames = [crop(image, top + k * dy, left + k * dx) for k in (-1, 0, 1)]
    motion = f"translate ({-2 * dx:+d}, {-2 * dy:+d}) px"
    return Case(name, motion, frames[0], frames[1], frames[2])


def zoom_view(image: np.ndarray, centre: tuple[float, float], scale: float) -> np.ndarray:
    """The CROP_HW view of image magnified by scale about centre (y, x), centre at the view's middle.

    PIL's resize with a fractional source box resamples that box to the view's size in one
    bicubic pass (antialiased when shrinking), so no integer rounding shifts the centre.
    """
    height, width = CROP_HW
    cy, cx = centre
    half_h, half_w = height / (2 * scale), width / (2 * scale)
    box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    if box[0] < 0 or box[1] < 0 or box[2] > image.shape[1] or box[3] > image.shape[0]:
        raise ValueError(f"zoom box {box} leaves the {image.shape[:2]} image")
    view = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC, box=box)
    return np.asarray(view, dtype=np.uint8).copy()


def zoom_case(name: str, photo: str, centre: tuple[float, float], base: float, step: float) -> Case:
    """Views at scales base·(1−step), base, base·(1+step): a zoom in from frame0 to frame1."""
    image = load_photo(photo)
    frames = [zoom_view(image, centre, base * (1 + k * step)) for k in (-1, 0, 1)]
    motion = f"zoom ×{(1 + step) / (1 - step):.3f} in"
    return Case(name, motion, frames[0], frames[1], frames[2])


def build_cases() -> list[Case]:
    """The quality set: 5 translations (4–12 px per half-step) and 3 zooms, 192×256 each."""
    return [
        translation_case("astronaut-pan-4", "astronaut", (200, 256), (0, 4)),
        translation_case("coffee-pan-8", "coffee", (200, 300), (0, 8)),
        translation_case("rocket-pan-12", "rocket", (220, 320), (0, 12)),
        translation_case("chelsea-diag-6", "chelsea", (150, 225), (6, 6)),
        translation_case("astronaut-diag-10", "astronaut", (256, 256), (-10, 10)),
        # why base 0.75: every view, the truth included, is shrunk through the same antialiasing
        # filter, so the truth is as sharp as the frames around it; ±4 % is a brisk zoom
        zoom_case("coffee-zoom", "coffee", (200.0, 300.0), 0.75, 0.04),
        zoom_case("chelsea-zoom", "chelsea", (150.0, 225.0), 0.75, 0.04),
        zoom_case("rocket-zoom", "rocket", (213.5, 320.0), 0.75, 0.04),
    ]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two same-shape uint8 images in dB (peak 255; inf if equal)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def blend(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
    """The 50/50 average of two uint8 frames, rounded half up to uint8: the no-motion baseline."""
    total = frame0.astype(np.uint16) + frame1.astype(np.uint16)
    return ((total + 1) // 2).astype(np.uint8)


def measure(interpolator: Interpolator, cases: Sequence[Case]) -> list[CaseResult]:
    """For each case: PSNR of RIFE's t=0.5 frame (as uint8) and of the 50/50 blend against truth."""
    results = []
    for case in cases:
        (middle,) = interpolator.interpolate(case.frame0, case.frame1, [0.5])
        results.append(
            CaseResult(
                case,
                psnr(to_uint8(middle), case.truth),
                psnr(blend(case.frame0, case.frame1), case.truth),
            )
        )
    return results
