"""IFNet, the flow network of RIFE v4 (Huang et al., "Real-Time Intermediate Flow
Estimation for Video Frame Interpolation", ECCV 2022; the Practical-RIFE "HDv3" releases).

Fast mode only: no refinement stage (contextnet/unet), no ensemble. One implementation
serves 4.0 to 4.26; what differs between releases is a ``RifeSpec``.

Each IFBlock looks at the pair at a coarser resolution, estimates a residual flow pair
(frame t→0 and t→1, 4 channels) and a blend mask; finer blocks refine the warped result.

Engine contract (the same for eager, TorchScript and ONNX):
    img0, img1: float32 B×3×H×W in [0, 1], H and W padded (``RifeSpec.padded_size``)
    timestep:   float32 B, in (0, 1)
    scale:      float32 1-element, one of ``spec.SCALES``
    returns frame: B×3×H×W, and big_motion: bool B (4.0 asks the caller to re-run those
    pairs at half the scale; always False for other releases)

Releases with a feature encoder (4.22+) also split in two, so that a stream encodes each
frame once instead of once per pair and timestep (``FeatureEncoder``, ``FlowFromFeatures``):
    encoder:  image B×3×H×W → features B×k×H×W
    flow:     img0, img1, f0, f1 (B×k×H×W), timestep, scale → frame, big_motion
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.rife.ops import resize, warp
from models.rife.spec import RifeSpec


def _conv(spec: RifeSpec, c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv and the release's activation, named as the checkpoints name them (N.0, N.1)."""
    conv = nn.Conv2d(c_in, c_out, 3, stride, 1)
    act: nn.Module = nn.PReLU(c_out) if spec.activation == "prelu" else nn.LeakyReLU(0.2)
    return nn.Sequential(conv, act)


class ResConv(nn.Module):
    """Residual 3×3 conv with a learned per-channel scale (4.1+)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One coarse-to-fine step: input at 1/(4·d) resolution, out flow, mask, features."""

    def __init__(self, spec: RifeSpec, c_in: int, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(spec, c_in, c // 2, 2), _conv(spec, c // 2, c, 2))
        # why: 4.0 has plain conv+PReLU layers around one outer residual; 4.1+ uses ResConv
        self.outer_residual = spec.activation == "prelu"
        layers = [_conv(spec, c, c) if self.outer_residual else ResConv(c) for _ in range(8)]
        self.convblock = nn.Sequential(*layers)
        self.lastconv: nn.Module
        if spec.pixel_shuffle:
            self.lastconv = nn.Sequential(
                nn.ConvTranspose2d(c, 4 * spec.head_channels, 4, 2, 1), nn.PixelShuffle(2)
            )
        else:
            self.lastconv = nn.ConvTranspose2d(c, spec.head_channels, 4, 2, 1)
        # lastconv brings 1/4 resolution back to 1/1 (pixel shuffle) or to 1/2 (4.0)
        self.up = 1.0 if spec.pixel_shuffle else 2.0

    def forward(self, x: Tensor, flow: Tensor | None, down: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: B×C×H×W, flow: B×4×H×W or None, down: 1-element → flow B×4×H×W, mask, features."""
        x = resize(x, 1.0 / down)
        if flow is not None:
            x = torch.cat((x, resize(flow, 1.0 / down) / down.to(x.dtype)), 1)
        feat = self.conv0(x)
        refined = self.convblock(feat)
        feat = refined + feat if self.outer_residual else refined
        up = down * self.up
        out = resize(self.lastconv(feat), up)
        return out[:, :4] * up.to(out.dtype), out[:, 4:5], out[:, 5:]


class Encoder(nn.Module):
    """Per-frame feature head of 4.22+ ("encode.*"): B×3×H×W → B×k×H×W."""

    def __init__(self, width: int, channels: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, channels, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFNet(nn.Module):
    """The flow network of one release; see the module docstring for the engine contract."""

    def __init__(self, spec: RifeSpec) -> None:
        super().__init__()
        self.version = spec.version
        self.block_scales = list(spec.block_scales)
        self.has_encoder = spec.encoder_channels > 0
        self.passes_features = spec.passes_features
        self.accumulates_mask = spec.accumulates_mask
        self.retries_big_motion = spec.retries_big_motion
        ins = [spec.first_block_inputs] + [spec.later_block_inputs] * (spec.block_count - 1)
        # checkpoint names are block0..blockN; the loader maps them onto this list
        self.blocks = nn.ModuleList(IFBlock(spec, c_in, c) for c_in, c in zip(ins, spec.widths, strict=True))
        self.encode = (
            Encoder(spec.encoder_width, spec.encoder_channels) if self.has_encoder else nn.Identity()
        )

    def forward(self, img0: Tensor, img1: Tensor, timestep: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        f0, f1 = self._features(img0, img1)
        return self.flow(img0, img1, f0, f1, timestep, scale)

    def flow(
        self, img0: Tensor, img1: Tensor, f0: Tensor, f1: Tensor, timestep: Tensor, scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``forward`` given both frames' encoder features (the images themselves without one)."""
        t_plane = timestep.to(img0.dtype).view(-1, 1, 1, 1) * torch.ones_like(img0[:, :1])  # B×1×H×W
        flow = torch.zeros_like(img0[:, :1])  # replaced by the first block
        mask = torch.zeros_like(img0[:, :1])
        feat = torch.zeros_like(img0[:, :1])
        warped0, warped1 = img0, img1
        big_motion = torch.zeros_like(timestep, dtype=torch.bool)
        for i, block in enumerate(self.blocks):
            down = self.block_scales[i] / scale
            if i == 0:
                first = [img0, img1, f0, f1, t_plane] if self.has_encoder else [img0, img1, t_plane]
                flow, mask, feat = block(torch.cat(first, 1), None, down)
            else:
                x = self._later_input(warped0, warped1, f0, f1, flow, t_plane, mask, feat)
                d_flow, d_mask, feat = block(x, flow, down)
                if i == 1 and self.retries_big_motion:
                    big_motion = self._is_big_motion(d_flow)
                flow = flow + d_flow
                mask = mask + d_mask if self.accumulates_mask else d_mask
            warped0 = warp(img0, flow[:, :2])
            warped1 = warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight), big_motion

    def _features(self, img0: Tensor, img1: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder features of both frames (B×k×H×W); unused stand-ins without an encoder."""
        if self.has_encoder:
            return self.encode(img0), self.encode(img1)
        return img0, img1

    def _later_input(
        self,
        warped0: Tensor,
        warped1: Tensor,
        f0: Tensor,
        f1: Tensor,
        flow: Tensor,
        t_plane: Tensor,
        mask: Tensor,
        feat: Tensor,
    ) -> Tensor:
        """The input of blocks 1.. in the reference's channel order."""
        if self.has_encoder:
            wf0 = warp(f0, flow[:, :2])
            wf1 = warp(f1, flow[:, 2:4])
            parts = [warped0, warped1, wf0, wf1, t_plane, mask]
        else:
            parts = [warped0, warped1, t_plane, mask]
        if self.passes_features:
            parts.append(feat)
        return torch.cat(parts, 1)

    @staticmethod
    def _is_big_motion(d_flow: Tensor) -> Tensor:
        """Per pair: block 1's residual flow exceeds 32 px in both directions (4.0 reference)."""
        peak0 = d_flow[:, :2].abs().flatten(1).amax(1)
        peak1 = d_flow[:, 2:4].abs().flatten(1).amax(1)
        return (peak0 > 32) & (peak1 > 32)


class FeatureEncoder(nn.Module):
    """The encoder of a 4.22+ release as an engine of its own: image B×3×H×W → B×k×H×W."""

    def __init__(self, net: IFNet) -> None:
        super().__init__()
        assert net.has_encoder, f"RIFE {net.version} has no feature encoder"
        self.encode = net.encode

    def forward(self, image: Tensor) -> Tensor:
        return self.encode(image)


class FlowFromFeatures(nn.Module):
    """IFNet taking both frames' features (``FeatureEncoder``) instead of computing them."""

    def __init__(self, net: IFNet) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, img0: Tensor, img1: Tensor, f0: Tensor, f1: Tensor, timestep: Tensor, scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        return self.net.flow(img0, img1, f0, f1, timestep, scale)
