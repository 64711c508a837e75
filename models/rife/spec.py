"""Per-version hyper-parameters of the RIFE v4 flow network (IFNet, "HDv3" family).

One readable network (``ifnet.py``) is built from one of these specs. The numbers are
read off the released ``flownet*.pkl`` checkpoints (their tensor shapes are listed in
``shared/conformance/rife/rife_*_state_dict.tsv``) and the reference code of each release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# why: the scale option of the reference CLIs; 0.5 is the usual setting for 4K input.
SCALES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class RifeSpec:
    """What differs between the released RIFE v4 flow networks."""

    # release name, as in the checkpoint file names ("4.26")
    version: str
    # channels c of each IFBlock, coarsest block first; the block count follows from it
    widths: tuple[int, ...]
    # how far each block downsamples its input at scale 1 (the reference's scale_list)
    block_scales: tuple[float, ...]
    # PReLU with an outer residual (4.0), or LeakyReLU(0.2) with ResConv's learned beta (4.1+)
    activation: Literal["prelu", "leaky"]
    # width of the feature encoder ("encode.*", 4.22+); 0 when the version has none
    encoder_width: int
    # channels the encoder gives per frame; 0 when the version has none
    encoder_channels: int
    # channels of lastconv's output after the pixel shuffle: flow 4 + mask 1 + features
    head_channels: int
    # whether lastconv ends in PixelShuffle(2) (4.1+) or upsamples by 2 with bilinear (4.0)
    pixel_shuffle: bool
    # whether each block passes its extra feature maps to the next block (4.22+)
    passes_features: bool
    # whether later blocks refine the mask additively (up to 4.6) or replace it (4.22+)
    accumulates_mask: bool
    # 4.0 re-runs at a coarser scale when block 1 sees motion beyond 32 px in both flows
    retries_big_motion: bool
    # frames are zero-padded to a multiple of this (scaled by 1/scale below scale 1)
    pad_multiple: int

    def __post_init__(self) -> None:
        # why: the server reruns big-motion pairs on re-padded images without features, which
        # is right only because no release both retries and has an encoder
        if self.retries_big_motion and self.encoder_channels:
            raise ValueError(f"RIFE {self.version}: a big-motion rerun would need re-encoded features")

    @property
    def block_count(self) -> int:
        return len(self.widths)

    @property
    def first_block_inputs(self) -> int:
        """img0, img1 (3 each), timestep (1), and both frames' encoder features."""
        return 7 + 2 * self.encoder_channels

    @property
    def later_block_inputs(self) -> int:
        """Warped images (6), timestep, mask, flow (4), warped features, carried features."""
        carried = self.head_channels - 5 if self.passes_features else 0
        return 12 + 2 * self.encoder_channels + carried

    def padded_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """Padded (H, W): the reference pads to max(m, int(m / scale))."""
        multiple = max(self.pad_multiple, int(self.pad_multiple / scale))
        return -(-height // multiple) * multiple, -(-width // multiple) * multiple


_FOUR_BLOCKS = (8.0, 4.0, 2.0, 1.0)
_FIVE_BLOCKS = (16.0, 8.0, 4.0, 2.0, 1.0)

SPECS: dict[str, RifeSpec] = {
    "4.0": RifeSpec(
        version="4.0",
        widths=(192, 128, 96, 64),
        block_scales=_FOUR_BLOCKS,
        activation="prelu",
        encoder_width=0,
        encoder_channels=0,
        head_channels=5,
        pixel_shuffle=False,
        passes_features=False,
        accumulates_mask=True,
        retries_big_motion=True,
        pad_multiple=32,
    ),
    "4.6": RifeSpec(
        version="4.6",
        widths=(192, 128, 96, 64),
        block_scales=_FOUR_BLOCKS,
        activation="leaky",
        encoder_width=0,
        encoder_channels=0,
        head_channels=6,
        pixel_shuffle=True,
        passes_features=False,
        accumulates_mask=True,
        retries_big_motion=False,
        pad_multiple=32,
    ),
    "4.22": RifeSpec(
        version="4.22",
        widths=(256, 192, 96, 48),
        block_scales=_FOUR_BLOCKS,
        activation="leaky",
        encoder_width=32,
        encoder_channels=8,
        head_channels=13,
        pixel_shuffle=True,
        passes_features=True,
        accumulates_mask=False,
        retries_big_motion=False,
        pad_multiple=32,
    ),
    "4.25": RifeSpec(
        version="4.25",
        widths=(192, 128, 96, 64, 32),
        block_scales=_FIVE_BLOCKS,
        activation="leaky",
        encoder_width=16,
        encoder_channels=4,
        head_channels=13,
        pixel_shuffle=True,
        passes_features=True,
        accumulates_mask=False,
        retries_big_motion=False,
        pad_multiple=64,
    ),
    "4.26": RifeSpec(
        version="4.26",
        widths=(192, 128, 96, 64, 32),
        block_scales=_FIVE_BLOCKS,
        activation="leaky",
        encoder_width=16,
        encoder_channels=4,
        head_channels=13,
        pixel_shuffle=True,
        passes_features=True,
        accumulates_mask=False,
        retries_big_motion=False,
        pad_multiple=64,
    ),
}


def get_spec(version: str) -> RifeSpec:
    """The spec of a release ("4.26", or a model name such as "rife-4.26")."""
    key = version.removeprefix("rife-").removeprefix("v")
    if key not in SPECS:
        raise ValueError(f"unknown RIFE version {version!r}; known: {', '.join(SPECS)}")
    return SPECS[key]
