"""From two frames to the frames between them, written once for every caller: padding,
scene cuts, the feature encoder (4.22+), the 4.0 big-motion retry and cropping.

The pipeline is a generator of engine work (``pair_steps``): it yields the rows it needs
run next and is sent their results, so it never calls an engine itself. The offline
``Interpolator`` (the CLI, the tests) runs each yielded batch on its engine at once
(``run_steps``); the server hands them to its scheduler, which batches them with other
sessions' rows. Either way the same code decides what runs, in what order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD, is_scene_change
from models.rife.spec import SCALES, RifeSpec
from models.runtime import Runner
from models.steps import Steps, run_steps

T = TypeVar("T")


class InterpolationInputError(ValueError):
    """Inputs the pipeline cannot take; the message says which and why."""


def timesteps_for_factor(factor: int) -> list[float]:
    """The N-1 in-between timesteps of an N× frame rate: i/N for i in 1..N-1."""
    if factor < 2:
        raise InterpolationInputError(f"factor must be at least 2, got {factor}")
    return [i / factor for i in range(1, factor)]


def check_timesteps(timesteps: Sequence[float]) -> None:
    if not timesteps:
        raise InterpolationInputError("no timesteps given")
    bad = [t for t in timesteps if not 0.0 < t < 1.0]
    if bad:
        raise InterpolationInputError(f"timesteps must lie strictly between 0 and 1, got {bad}")


def check_scale(scale: float) -> None:
    if scale not in SCALES:
        raise InterpolationInputError(f"scale must be one of {list(SCALES)}, got {scale}")


def check_frame(frame: np.ndarray, name: str = "frame") -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InterpolationInputError(f"{name} must be uint8 H×W×3 RGB, got {frame.dtype} {frame.shape}")


def check_pair(frame0: np.ndarray, frame1: np.ndarray) -> None:
    check_frame(frame0, "frame0")
    check_frame(frame1, "frame1")
    if frame0.shape != frame1.shape:
        raise InterpolationInputError(f"frame sizes differ: {frame0.shape[:2]} and {frame1.shape[:2]}")


def to_padded(frame: np.ndarray, padded_hw: tuple[int, int]) -> Tensor:
    """frame: uint8 H×W×3 → float32 1×3×Hp×Wp in [0, 1], zeros on the right and bottom."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255
    return F.pad(x, (0, padded_hw[1] - frame.shape[1], 0, padded_hw[0] - frame.shape[0]))


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """frame: float32 3×H×W in [0, 1] → uint8 H×W×3, rounded."""
    return (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


# --- frames, rows and results ------------------------------------------------------------


@dataclass
class PreparedFrame:
    """A decoded frame, padded once for every pair it takes part in (a stream keeps the
    previous one), and its encoder features once they have been computed."""

    pixels: np.ndarray  # uint8 H×W×3
    padded: Tensor  # float32 1×3×Hp×Wp in [0, 1] on the engine's device, zeros right and bottom
    scale: float  # the scale ``padded`` was sized for
    features: Tensor | None = None  # 1×k×Hp×Wp from the feature encoder (4.22+), once it ran


def prepare(
    spec: RifeSpec, pixels: np.ndarray, scale: float, device: torch.device | str = "cpu"
) -> PreparedFrame:
    """pixels: uint8 H×W×3 → padded for ``scale`` on ``device``."""
    check_frame(pixels)
    check_scale(scale)
    padded_hw = spec.padded_size(pixels.shape[0], pixels.shape[1], scale)
    return PreparedFrame(pixels, to_padded(pixels, padded_hw).to(device), scale)


@dataclass(frozen=True)
class EncodeRow:
    """One frame for the feature encoder."""

    image: Tensor  # float32 1×3×Hp×Wp


@dataclass(frozen=True)
class FlowRow:
    """One padded pair at one timestep, for the flow network (or the whole network)."""

    img0: Tensor  # float32 1×3×Hp×Wp
    img1: Tensor  # float32 1×3×Hp×Wp
    f0: Tensor | None  # 1×k×Hp×Wp: img0's encoder features when the encoder runs apart, else None
    f1: Tensor | None  # 1×k×Hp×Wp: img1's
    timestep: float  # in (0, 1)
    scale: float  # flow resolution: 1.0 up to 1080p, 0.5 for 4K (RIFE's own advice)


Row = EncodeRow | FlowRow


@dataclass(frozen=True)
class FlowResult:
    frame: Tensor  # 3×Hp×Wp in [0, 1], in the engine's precision
    big_motion: bool  # v4.0 only: the motion exceeds the coarsest block; rerun one octave coarser


RowResult = Tensor | FlowResult  # an EncodeRow's features (1×k×Hp×Wp), or a FlowRow's result


def batch_key(row: Row) -> Hashable:
    """Rows run in one engine call only when their keys are equal: one part, one padded
    size, one scale."""
    if isinstance(row, EncodeRow):
        return ("encode", tuple(row.image.shape[-2:]))
    return ("flow", tuple(row.img0.shape[-2:]), row.scale)


@dataclass(frozen=True)
class Between:
    """One in-between frame."""

    timestep: float
    frame: Tensor  # float32 3×H×W in [0, 1]
    scene_change: bool  # True: a copy of the earlier frame, not a blend


# --- the engines ------------------------------------------------------------------------


@dataclass(frozen=True)
class RifeEngines:
    """One release's runners: the whole network, or (4.22+) the flow part with the feature
    encoder beside it, so each frame of a stream is encoded once."""

    spec: RifeSpec
    net: Runner  # the whole network, or the flow part when ``encoder`` is set
    encoder: Runner | None = None  # image → features, when the encoder runs apart

    @property
    def device(self) -> torch.device:
        return getattr(self.net, "device", torch.device("cpu"))

    def execute(self, rows: Sequence[Row]) -> list[RowResult]:
        """One engine call for rows of one ``batch_key``, one result per row in order."""
        if isinstance(rows[0], EncodeRow):
            return list(self._encode([_of(EncodeRow, r) for r in rows]))
        return list(self._flow([_of(FlowRow, r) for r in rows]))

    def _encode(self, rows: Sequence[EncodeRow]) -> list[Tensor]:
        assert self.encoder is not None, f"RIFE {self.spec.version} has no feature encoder here"
        (features,) = self.encoder(torch.cat([r.image for r in rows]))  # B×k×Hp×Wp
        return list(features.split(1))

    def _flow(self, rows: Sequence[FlowRow]) -> list[FlowResult]:
        img0 = torch.cat([r.img0 for r in rows])  # B×3×Hp×Wp
        img1 = torch.cat([r.img1 for r in rows])
        timestep = torch.tensor([r.timestep for r in rows], dtype=torch.float32)  # B
        scale = torch.tensor([rows[0].scale], dtype=torch.float32)  # [1]: one scale per batch key
        if self.encoder is None:
            frames, big_motion = self.net(img0, img1, timestep, scale)
        else:
            f0 = torch.cat([_present(r.f0) for r in rows])  # B×k×Hp×Wp
            f1 = torch.cat([_present(r.f1) for r in rows])
            frames, big_motion = self.net(img0, img1, f0, f1, timestep, scale)
        flags = big_motion.bool().cpu().tolist()
        return [FlowResult(frames[i], bool(flags[i])) for i in range(len(rows))]


# --- the pipeline -----------------------------------------------------------------------

RowSteps = Steps[Row, RowResult, T]
"""RIFE's engine work: rows of one ``batch_key`` at a time (``models/steps.py``)."""


def pair_steps(
    spec: RifeSpec,
    frame0: PreparedFrame,
    frame1: PreparedFrame,
    timesteps: Sequence[float],
    *,
    encodes: bool,
    scene_change_threshold: float | None,
) -> RowSteps[list[Between]]:
    """The in-between frames of a prepared pair, one per timestep, in order.

    ``encodes``: the engines run the feature encoder apart, so frames without features are
    encoded first (each once: the features stay on the ``PreparedFrame`` for its next pair).
    A pair across a scene cut repeats the earlier frame and runs nothing.
    """
    check_timesteps(timesteps)
    if frame0.pixels.shape != frame1.pixels.shape or frame0.scale != frame1.scale:
        raise InterpolationInputError(
            f"frame sizes differ: {frame0.pixels.shape[:2]} and {frame1.pixels.shape[:2]}"
        )
    height, width = frame0.pixels.shape[:2]
    if is_scene_change(frame0.pixels, frame1.pixels, scene_change_threshold):
        earlier = frame0.padded[0, :, :height, :width].float()
        return [Between(t, earlier.clone(), scene_change=True) for t in timesteps]
    if encodes:
        yield from encode_steps([frame0, frame1])
    rows = [
        FlowRow(frame0.padded, frame1.padded, frame0.features, frame1.features, t, frame0.scale)
        for t in timesteps
    ]
    frames = yield from flow_steps(spec, rows)
    return [
        Between(t, f[:, :height, :width].float(), scene_change=False)
        for t, f in zip(timesteps, frames, strict=True)
    ]


def encode_steps(frames: Sequence[PreparedFrame]) -> RowSteps[None]:
    """Encode the frames that have no features yet, in one call."""
    missing = [f for f in frames if f.features is None]
    if not missing:
        return
    features = yield [EncodeRow(f.padded) for f in missing]
    for frame, feature in zip(missing, features, strict=True):
        frame.features = _of(Tensor, feature)


def flow_steps(spec: RifeSpec, rows: Sequence[FlowRow]) -> RowSteps[list[Tensor]]:
    """Padded rows → one 3×Hp×Wp frame each; 4.0's big-motion rows are run again one octave
    coarser, as the reference does (per pair: a quiet pair keeps its first answer)."""
    results = [_of(FlowResult, r) for r in (yield list(rows))]
    frames = [r.frame for r in results]
    needs_retry = [i for i, r in enumerate(results) if r.big_motion]
    if needs_retry:
        height, width = rows[0].img0.shape[-2:]
        again = yield [_coarser(spec, rows[i]) for i in needs_retry]
        for i, result in zip(needs_retry, again, strict=True):
            frames[i] = _of(FlowResult, result).frame[:, :height, :width]
    return frames


def _coarser(spec: RifeSpec, row: FlowRow) -> FlowRow:
    """The row at half its scale. Half the scale can need a larger padding multiple than the
    frames have (the reference crashes there): pad further, and the caller crops back.
    No features: only 4.0 asks for this rerun, and it has no encoder (``RifeSpec`` checks)."""
    scale = row.scale / 2
    height, width = row.img0.shape[-2], row.img0.shape[-1]
    padded_h, padded_w = spec.padded_size(height, width, scale)
    pad = (0, padded_w - width, 0, padded_h - height)
    return FlowRow(F.pad(row.img0, pad), F.pad(row.img1, pad), None, None, row.timestep, scale)


def _of(kind: type[T], value: object) -> T:
    assert isinstance(value, kind), f"expected {kind.__name__}, got {type(value).__name__}"
    return value


def _present(features: Tensor | None) -> Tensor:
    assert features is not None, "a row for the flow part came without its frames' features"
    return features


# --- the offline pipeline ---------------------------------------------------------------


@dataclass
class Interpolator:
    """A loaded RIFE engine and the pipeline around it, run directly (no server); the engine
    is shared, this is cheap."""

    spec: RifeSpec
    runner: Runner  # the whole network, or the flow part when ``encoder`` is given
    # pairs whose thumbnail SSIM falls below this are a cut: repeat frame0 (None: never)
    scene_change_threshold: float | None = DEFAULT_SCENE_CHANGE_THRESHOLD
    encoder: Runner | None = None  # the feature encoder, when it runs apart (4.22+)

    @property
    def engines(self) -> RifeEngines:
        return RifeEngines(self.spec, self.runner, self.encoder)

    def interpolate(
        self, frame0: np.ndarray, frame1: np.ndarray, timesteps: Sequence[float], scale: float = 1.0
    ) -> list[np.ndarray]:
        """frame0, frame1: uint8 H×W×3 → one float32 3×H×W frame in [0, 1] per timestep."""
        check_pair(frame0, frame1)
        engines = self.engines
        prepared0, prepared1 = (prepare(self.spec, f, scale, engines.device) for f in (frame0, frame1))
        steps = pair_steps(
            self.spec,
            prepared0,
            prepared1,
            timesteps,
            encodes=engines.encoder is not None,
            scene_change_threshold=self.scene_change_threshold,
        )
        return [b.frame.cpu().numpy() for b in run_steps(steps, engines.execute)]

    def run_padded(self, img0: Tensor, img1: Tensor, timestep: Tensor, scale: float) -> Tensor:
        """One engine call on padded B×3×Hp×Wp pairs (B timesteps) → B×3×Hp×Wp, with the 4.0
        retry (``flow_steps``) for the pairs that need it."""
        self._check_padded(img0.shape[-2], img0.shape[-1], scale)
        rows = [
            FlowRow(img0[i : i + 1], img1[i : i + 1], None, None, float(timestep[i]), scale)
            for i in range(img0.shape[0])
        ]
        return torch.stack(run_steps(flow_steps(self.spec, rows), self.engines.execute))

    def _check_padded(self, height: int, width: int, scale: float) -> None:
        if (height, width) != self.spec.padded_size(height, width, scale):
            multiple = max(self.spec.pad_multiple, int(self.spec.pad_multiple / scale))
            raise InterpolationInputError(f"padded size {height}×{width} is not a multiple of {multiple}")
