"""The pipeline around the network: timesteps, padding, scene changes, 4.0's retry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from models.rife.checkpoint import load_ifnet
from models.rife.ifnet import IFNet
from models.rife.inference import (
    InterpolationInputError,
    Interpolator,
    timesteps_for_factor,
    to_padded,
    to_uint8,
)
from models.rife.scene import is_scene_change, thumbnail_ssim
from models.rife.spec import SCALES, get_spec
from models.runtime import TorchRunner
from tests.models.rife_engines import hashed_ifnet


@pytest.fixture(scope="module")
def net40(rife_v40_weights: Path) -> IFNet:
    return load_ifnet(rife_v40_weights, get_spec("4.0"))


def _crop(image: np.ndarray, dy: int, dx: int, h: int = 192, w: int = 256) -> np.ndarray:
    return np.ascontiguousarray(image[100 + dy : 100 + dy + h, 100 + dx : 100 + dx + w])


def test_factor_gives_even_timesteps() -> None:
    assert timesteps_for_factor(2) == [0.5]
    assert timesteps_for_factor(4) == [0.25, 0.5, 0.75]
    with pytest.raises(InterpolationInputError, match="at least 2"):
        timesteps_for_factor(1)


@pytest.mark.parametrize("timesteps", [[0.0], [1.0], [0.5, 1.2], [-0.1], []])
def test_timesteps_outside_the_open_interval_are_refused(timesteps: list[float]) -> None:
    interpolator = Interpolator(get_spec("4.6"), TorchRunner(hashed_ifnet("4.6"), "eager"))
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InterpolationInputError):
        interpolator.interpolate(frame, frame, timesteps)


def test_bad_scale_and_mismatched_frames_are_refused() -> None:
    interpolator = Interpolator(get_spec("4.6"), TorchRunner(hashed_ifnet("4.6"), "eager"))
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InterpolationInputError, match="scale"):
        interpolator.interpolate(frame, frame, [0.5], scale=0.3)
    with pytest.raises(InterpolationInputError, match="sizes differ"):
        interpolator.interpolate(frame, np.zeros((32, 40, 3), np.uint8), [0.5])
    with pytest.raises(InterpolationInputError, match="uint8"):
        interpolator.interpolate(frame.astype(np.float32), frame, [0.5])


@pytest.mark.parametrize("version", ["4.6", "4.26"])
@pytest.mark.parametrize("scale", SCALES)
def test_odd_sizes_come_back_at_their_own_size(version: str, scale: float) -> None:
    """37×53 is padded to the release's multiple for each scale and cropped back."""
    interpolator = Interpolator(get_spec(version), TorchRunner(hashed_ifnet(version), "eager"), None)
    gen = np.random.default_rng(0)
    frame0 = gen.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    frame1 = np.roll(frame0, 2, axis=1)
    outs = interpolator.interpolate(frame0, frame1, [0.25, 0.75], scale)
    assert [o.shape for o in outs] == [(3, 37, 53)] * 2
    assert all(np.isfinite(o).all() for o in outs)


def test_unpadded_batches_are_refused() -> None:
    interpolator = Interpolator(get_spec("4.26"), TorchRunner(hashed_ifnet("4.26"), "eager"))
    x = torch.zeros(1, 3, 64, 96)
    with pytest.raises(InterpolationInputError, match="multiple of 64"):
        interpolator.run_padded(x, x, torch.tensor([0.5]), 1.0)


def test_scene_change_repeats_the_earlier_frame(net40: IFNet) -> None:
    cut0, cut1 = _crop(data.astronaut(), 0, 0), _crop(data.rocket(), 0, 0)
    assert thumbnail_ssim(cut0, cut0) == pytest.approx(1.0, abs=1e-6)
    assert is_scene_change(cut0, cut1, 0.2)
    interpolator = Interpolator(get_spec("4.0"), TorchRunner(net40, "eager"))
    outs = interpolator.interpolate(cut0, cut1, [0.25, 0.5])
    assert all(np.array_equal(to_uint8(o), cut0) for o in outs)
    assert outs[0] is not outs[1], "each timestep gets its own copy"


def test_scene_change_threshold_is_configurable(net40: IFNet) -> None:
    cut0, cut1 = _crop(data.astronaut(), 0, 0), _crop(data.rocket(), 0, 0)
    ssim = thumbnail_ssim(cut0, cut1)
    assert is_scene_change(cut0, cut1, ssim + 0.01)
    assert not is_scene_change(cut0, cut1, ssim - 0.01)
    assert not is_scene_change(cut0, cut1, None)
    blended = Interpolator(get_spec("4.0"), TorchRunner(net40, "eager"), scene_change_threshold=None)
    (out,) = blended.interpolate(cut0, cut1, [0.5])
    assert not np.array_equal(to_uint8(out), cut0)


def test_similar_frames_are_not_a_scene_change() -> None:
    image = data.astronaut()
    assert not is_scene_change(_crop(image, 0, 0), _crop(image, 4, 4), 0.2)


def test_v40_big_motion_is_rerun_one_octave_coarser(net40: IFNet) -> None:
    """The reference re-runs 4.0 with doubled block scales when block 1 sees > 32 px in both
    flows; per pair here, so a quiet pair in the same batch keeps its first answer."""
    image = data.astronaut()
    big = (_crop(image, 0, 0), _crop(image, 96, 96))
    quiet = (_crop(image, 0, 0), _crop(image, 4, 4))
    hw = (192, 256)
    img0 = torch.cat([to_padded(big[0], hw), to_padded(quiet[0], hw)])
    img1 = torch.cat([to_padded(big[1], hw), to_padded(quiet[1], hw)])
    t = torch.tensor([0.5, 0.5])
    with torch.inference_mode():
        first, flags = net40(img0, img1, t, torch.tensor([1.0]))
        coarser, _ = net40(img0, img1, t, torch.tensor([0.5]))
    assert flags.tolist() == [True, False]
    out = Interpolator(get_spec("4.0"), TorchRunner(net40, "eager")).run_padded(img0, img1, t, 1.0)
    # why 1e-4: the retry is a batch of one, whose convolutions sum in another order
    assert torch.allclose(out[0], coarser[0], atol=1e-4)
    assert torch.allclose(out[1], first[1], atol=1e-4)
    assert float((first[0] - coarser[0]).abs().max()) > 0.01


def test_v40_retry_pads_further_when_the_coarser_scale_needs_it(net40: IFNet) -> None:
    """224×288 is a multiple of 32 (scale 1) but not of 64 (scale 0.5, the re-run)."""
    image = data.astronaut()
    frame0, frame1 = _crop(image, 0, 0, 224, 288), _crop(image, 96, 96, 224, 288)
    img0, img1 = to_padded(frame0, (224, 288)), to_padded(frame1, (224, 288))
    t = torch.tensor([0.5])
    with torch.inference_mode():
        _, flags = net40(img0, img1, t, torch.tensor([1.0]))
        wide0, wide1 = to_padded(frame0, (256, 320)), to_padded(frame1, (256, 320))
        coarser, _ = net40(wide0, wide1, t, torch.tensor([0.5]))
    assert flags.tolist() == [True]
    out = Interpolator(get_spec("4.0"), TorchRunner(net40, "eager")).run_padded(img0, img1, t, 1.0)
    assert out.shape == (1, 3, 224, 288)
    assert torch.allclose(out, coarser[..., :224, :288], atol=1e-4)


def test_no_release_both_retries_big_motion_and_encodes_features() -> None:
    """The server's big-motion rerun re-pads images without re-encoding features: a spec that
    needed both is refused where it is made."""
    with pytest.raises(ValueError, match="re-encoded features"):
        dataclasses.replace(get_spec("4.26"), retries_big_motion=True)
