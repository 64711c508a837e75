"""From two frames to the frames between them: padding, batching, the 4.0 big-motion
retry, cropping and scene changes, around any engine that honours IFNet's contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD, is_scene_change
from models.rife.spec import SCALES, RifeSpec
from models.runtime import Runner


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


def check_pair(frame0: np.ndarray, frame1: np.ndarray) -> None:
    for name, frame in (("frame0", frame0), ("frame1", frame1)):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InterpolationInputError(f"{name} must be uint8 H×W×3 RGB, got {frame.dtype} {frame.shape}")
    if frame0.shape != frame1.shape:
        raise InterpolationInputError(f"frame sizes differ: {frame0.shape[:2]} and {frame1.shape[:2]}")


def to_padded(frame: np.ndarray, padded_hw: tuple[int, int]) -> Tensor:
    """frame: uint8 H×W×3 → float32 1×3×Hp×Wp in [0, 1], zeros on the right and bottom."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255
    return F.pad(x, (0, padded_hw[1] - frame.shape[1], 0, padded_hw[0] - frame.shape[0]))


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """frame: float32 3×H×W in [0, 1] → uint8 H×W×3, rounded."""
    return (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


@dataclass
class Interpolator:
    """A loaded RIFE engine and the pipeline around it; the engine is shared, this is cheap."""

    spec: RifeSpec
    runner: Runner
    # pairs whose thumbnail SSIM falls below this are a cut: repeat frame0 (None: never)
    scene_change_threshold: float | None = DEFAULT_SCENE_CHANGE_THRESHOLD

    def interpolate(
        self, frame0: np.ndarray, frame1: np.ndarray, timesteps: Sequence[float], scale: float = 1.0
    ) -> list[np.ndarray]:
        """frame0, frame1: uint8 H×W×3 → one float32 3×H×W frame in [0, 1] per timestep."""
        check_pair(frame0, frame1)
        check_timesteps(timesteps)
        check_scale(scale)
        if is_scene_change(frame0, frame1, self.scene_change_threshold):
            earlier = frame0.transpose(2, 0, 1).astype(np.float32) / 255
            return [earlier.copy() for _ in timesteps]
        height, width = frame0.shape[:2]
        padded_hw = self.spec.padded_size(height, width, scale)
        n = len(timesteps)
        img0 = to_padded(frame0, padded_hw).expand(n, -1, -1, -1)
        img1 = to_padded(frame1, padded_hw).expand(n, -1, -1, -1)
        out = self.run_padded(img0, img1, torch.tensor(list(timesteps), dtype=torch.float32), scale)
        return [frame[:, :height, :width].float().cpu().numpy() for frame in out]

    def run_padded(self, img0: Tensor, img1: Tensor, timestep: Tensor, scale: float) -> Tensor:
        """One engine call on padded B×3×Hp×Wp pairs (B timesteps) → B×3×Hp×Wp.

        4.0 flags pairs whose motion is too large for its coarsest block; as the reference
        does, those are run again with every block one octave coarser (half the scale).
        Half the scale can need a larger padding multiple than the frames have (the reference
        crashes there); those pairs are padded further for the re-run and cropped back.
        """
        self._check_padded(img0.shape[-2], img0.shape[-1], scale)
        frames, big_motion = self.runner(img0, img1, timestep, torch.tensor([scale], dtype=torch.float32))
        big_motion = big_motion.to(img0.device)
        retry = big_motion.bool().nonzero().flatten()
        if retry.numel():
            again = self._run_coarser(img0[retry], img1[retry], timestep[retry], scale / 2)
            frames = frames.clone()
            frames[retry.to(frames.device)] = again.to(frames.device, frames.dtype)
        return frames

    def _run_coarser(self, img0: Tensor, img1: Tensor, timestep: Tensor, scale: float) -> Tensor:
        """The re-run at ``scale``, zero-padded further where that scale needs it → B×3×H×W."""
        height, width = img0.shape[-2], img0.shape[-1]
        padded_h, padded_w = self.spec.padded_size(height, width, scale)
        pad = (0, padded_w - width, 0, padded_h - height)
        frames, _ = self.runner(F.pad(img0, pad), F.pad(img1, pad), timestep, torch.tensor([scale]))
        return frames[..., :height, :width]

    def _check_padded(self, height: int, width: int, scale: float) -> None:
        if (height, width) != self.spec.padded_size(height, width, scale):
            multiple = max(self.spec.pad_multiple, int(self.spec.pad_multiple / scale))
            raise InterpolationInputError(f"padded size {height}×{width} is not a multiple of {multiple}")
