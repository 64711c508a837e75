"""The sub-networks of XMem (Cheng & Schwing, ECCV 2022): key encoder and projection, value
encoder, decoder, and the blocks they share (group residual blocks, CBAM, the GRU-style
sensory-memory updates), plus STM's soft aggregation.

Row layout. The reference keeps per-object features as B×N×C×H×W and flattens (B·N) for
every conv. Here the flattening happens once, at the boundary: per-object tensors are rows
(R×C×H×W, R = objects summed over frames), per-frame features stay F×C×H×W, and
``frame_index`` (int64 R) says which frame each row belongs to. A frame's features are
gathered per row only where the reference expands them over objects, so one call serves
frames with different object counts, and per-frame convs (``skip_conv``) run once a frame.

Two of the reference's ops do not export with dynamic shapes; they are rewritten into
forms that compute the same numbers (tests prove it): CBAM pools with a kernel equal to
the input size (here mean/amax over H, W), and the hidden updater downsamples with
``interpolate(mode="area")`` by 1/2 and 1/4 (here ``avg_pool2d`` with kernel 2 and 4, exact
because padded frames are multiples of 16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.xmem.resnet import resnet18_stages, resnet50_stages, stem

# why: feature widths of the ResNet-50 key encoder at strides 16, 8, 4 (XMem's f16/f8/f4)
F16_DIM, F8_DIM, F4_DIM = 1024, 512, 256
# why: the ResNet-18 value encoder ends at layer3, 256 channels at stride 16
VALUE_TRUNK_DIM = 256
# why: the decoder's widths in XMem's modules.py (fuser to 512, up-blocks to 256)
DECODER_DIM, DECODER_UP_DIM = 512, 256
# why: CBAM's channel-gate reduction ratio (Woo et al., ECCV 2018), as XMem uses it
CBAM_REDUCTION = 16
# why: CBAM's spatial-gate kernel (Woo et al., ECCV 2018)
CBAM_SPATIAL_KERNEL = 7
# why: soft aggregation's clamp, from STM's aggregate (Oh et al., ICCV 2019) as XMem keeps it
AGGREGATE_EPS = 1e-7


def gather_rows(x: Tensor, frame_index: Tensor) -> Tensor:
    """Per-frame F×C×H×W → per-row R×C×H×W (the reference's expand over objects)."""
    return x.index_select(0, frame_index)


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, 1, 1)


class GroupResBlock(nn.Module):
    """Pre-activation residual block on rows; a 3×3 conv projects the shortcut when widths differ."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        # no parameters when widths match, so the state dict has no "downsample" there
        self.downsample: nn.Module = _conv3(c_in, c_out) if c_in != c_out else nn.Identity()
        self.conv1 = _conv3(c_in, c_out)
        self.conv2 = _conv3(c_out, c_out)

    def forward(self, g: Tensor) -> Tensor:
        out = self.conv1(F.relu(g))
        out = self.conv2(F.relu(out))
        return out + self.downsample(g)


class ChannelGate(nn.Module):
    """CBAM's channel attention: a shared MLP on the spatial mean and max, summed, sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels // CBAM_REDUCTION
        # Flatten first: the checkpoints name the linears mlp.1 and mlp.3
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        # why mean/amax: the reference pools with kernel (H, W), a shape-dependent kernel
        # that fixes H and W in an exported graph; over the whole map it is the same number
        avg = x.mean(dim=(2, 3))  # R×C
        peak = x.amax(dim=(2, 3))  # R×C
        scale = torch.sigmoid(self.mlp(avg) + self.mlp(peak))
        return x * scale[:, :, None, None]


class SpatialConv(nn.Module):
    """The spatial gate's conv, one name level down (``spatial.conv``), as the checkpoints have it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, CBAM_SPATIAL_KERNEL, 1, CBAM_SPATIAL_KERNEL // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a 7×7 conv on the channel max and mean, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)  # R×2×h×w
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al., ECCV 2018)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Frame features (gathered per row) concatenated before each row's features, then
    GroupResBlock → + CBAM → GroupResBlock."""

    def __init__(self, x_dim: int, g_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = GroupResBlock(x_dim + g_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = GroupResBlock(mid_dim, out_dim)

    def forward(self, x_rows: Tensor, g: Tensor) -> Tensor:
        """x_rows: R×Cx×h×w, g: R×Cg×h×w → R×out×h×w."""
        g = self.block1(torch.cat([x_rows, g], 1))
        return self.block2(g + self.attention(g))


def gru_step(values: Tensor, h: Tensor, hidden_dim: int) -> Tensor:
    """XMem's GRU: forget, update and candidate from one conv (R×3k×h×w), new h: R×k×h×w.

    The candidate ignores the forget gate, unlike a textbook GRU: so the reference defines it.
    """
    forget = torch.sigmoid(values[:, :hidden_dim])
    update = torch.sigmoid(values[:, hidden_dim : 2 * hidden_dim])
    candidate = torch.tanh(values[:, 2 * hidden_dim :])
    return forget * h * (1 - update) + update * candidate


class HiddenReinforcer(nn.Module):
    """The value encoder's deep update of the sensory memory from the new value."""

    def __init__(self, g_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = _conv3(g_dim + hidden_dim, 3 * hidden_dim)

    def forward(self, g: Tensor, h: Tensor) -> Tensor:
        """g: R×value_dim×h×w, h: R×hidden_dim×h×w → new h."""
        return gru_step(self.transform(torch.cat([g, h], 1)), h, self.hidden_dim)


class HiddenUpdater(nn.Module):
    """The decoder's update of the sensory memory from its features at strides 16, 8, 4."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.g16_conv = nn.Conv2d(g_dims[0], mid_dim, 1)
        self.g8_conv = nn.Conv2d(g_dims[1], mid_dim, 1)
        self.g4_conv = nn.Conv2d(g_dims[2], mid_dim, 1)
        self.transform = _conv3(mid_dim + hidden_dim, 3 * hidden_dim)

    def forward(self, g16: Tensor, g8: Tensor, g4: Tensor, h: Tensor) -> Tensor:
        """g16: R×512×h×w, g8: R×256×2h×2w, g4: R×257×4h×4w, h: R×k×h×w → new h."""
        # why avg_pool2d: the reference's interpolate(mode="area") by 1/2 and 1/4 is an
        # adaptive pool whose kernel depends on the size; with sizes multiples of the factor
        # it is exactly this fixed-kernel average, which exports with dynamic shapes
        g = self.g16_conv(g16) + self.g8_conv(F.avg_pool2d(g8, 2)) + self.g4_conv(F.avg_pool2d(g4, 4))
        return gru_step(self.transform(torch.cat([g, h], 1)), h, self.hidden_dim)


class UpsampleBlock(nn.Module):
    """Rows ×2 (bilinear) plus the frame's skip features, then a GroupResBlock."""

    def __init__(self, skip_dim: int, up_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_conv = _conv3(skip_dim, up_dim)
        self.out_conv = GroupResBlock(up_dim, out_dim)

    def forward(self, skip: Tensor, frame_index: Tensor, up_g: Tensor) -> Tensor:
        """skip: F×Cs×2h×2w (per frame), up_g: R×Cu×h×w → R×out×2h×2w."""
        skip = gather_rows(self.skip_conv(skip), frame_index)  # conv once a frame, then per row
        g = F.interpolate(up_g, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out_conv(skip + g)


class KeyEncoder(nn.Module):
    """ResNet-50 to stride 16: image F×3×H×W → f16 F×1024×H/16, f8 F×512×H/8, f4 F×256×H/4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.maxpool = stem(3)
        self.relu = nn.ReLU()
        # the reference names ResNet's layer1 "res2" and keeps layer2/layer3 as they are
        self.res2, self.layer2, self.layer3 = resnet50_stages()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # max-pool before ReLU: the two commute exactly, and pooling first is 4× less work
        x = self.relu(self.maxpool(self.bn1(self.conv1(image))))  # F×64×H/4×W/4
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class KeyProjection(nn.Module):
    """f16 → key (F×k×h×w), shrinkage d²+1 ≥ 1 (F×1×h×w), selection in (0, 1) (F×k×h×w)."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = _conv3(in_dim, key_dim)
        self.d_proj = _conv3(in_dim, 1)
        self.e_proj = _conv3(in_dim, key_dim)

    def forward(self, f16: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shrinkage = self.d_proj(f16) ** 2 + 1
        selection = torch.sigmoid(self.e_proj(f16))
        return self.key_proj(f16), shrinkage, selection


class ValueEncoder(nn.Module):
    """Per object row: image, mask and "others" through a 5-channel ResNet-18, fused with the
    frame's f16 → value R×value_dim×h×w; optionally deep-updates the hidden state."""

    def __init__(self, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.maxpool = stem(5)  # image 3 + mask + others
        self.relu = nn.ReLU()
        self.layer1, self.layer2, self.layer3 = resnet18_stages()
        self.fuser = FeatureFusionBlock(F16_DIM, VALUE_TRUNK_DIM, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim)

    def forward(
        self,
        image: Tensor,
        f16: Tensor,
        frame_index: Tensor,
        hidden: Tensor,
        masks: Tensor,
        others: Tensor,
        is_deep_update: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """image: F×3×H×W, f16: F×1024×h×w, frame_index: R, hidden: R×k×h×w, masks/others: R×H×W."""
        g = torch.cat([gather_rows(image, frame_index), masks[:, None], others[:, None]], 1)  # R×5×H×W
        g = self.relu(self.maxpool(self.bn1(self.conv1(g))))  # R×64×H/4×W/4
        g = self.layer3(self.layer2(self.layer1(g)))  # R×256×h×w
        value = self.fuser(gather_rows(f16, frame_index), g)  # R×value_dim×h×w
        if is_deep_update:
            hidden = self.hidden_reinforce(value, hidden)
        return value, hidden


class Decoder(nn.Module):
    """Memory readout and hidden state → per-object logits at full size; updates the hidden state."""

    def __init__(self, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fuser = FeatureFusionBlock(F16_DIM, value_dim + hidden_dim, DECODER_DIM, DECODER_DIM)
        # inputs: g16, g8, and g4 with the 1/4-size logit appended
        g_dims = (DECODER_DIM, DECODER_UP_DIM, DECODER_UP_DIM + 1)
        self.hidden_update = HiddenUpdater(g_dims, DECODER_UP_DIM, hidden_dim)
        self.up_16_8 = UpsampleBlock(F8_DIM, DECODER_DIM, DECODER_UP_DIM)
        self.up_8_4 = UpsampleBlock(F4_DIM, DECODER_UP_DIM, DECODER_UP_DIM)
        self.pred = _conv3(DECODER_UP_DIM, 1)

    def forward(
        self,
        f16: Tensor,
        f8: Tensor,
        f4: Tensor,
        frame_index: Tensor,
        readout: Tensor,
        hidden: Tensor,
        h_out: bool = True,
    ) -> tuple[Tensor | None, Tensor]:
        """f16/f8/f4: per frame, readout: R×value_dim×h×w, hidden: R×k×h×w →
        (new hidden R×k×h×w, or None without h_out; logits R×H×W)."""
        g16 = self.fuser(gather_rows(f16, frame_index), torch.cat([readout, hidden], 1))  # R×512×h×w
        g8 = self.up_16_8(f8, frame_index, g16)  # R×256×2h×2w
        g4 = self.up_8_4(f4, frame_index, g8)  # R×256×4h×4w
        logits = self.pred(F.relu(g4))  # R×1×4h×4w
        new_hidden: Tensor | None = None
        if h_out:
            new_hidden = self.hidden_update(g16, g8, torch.cat([g4, logits], 1), hidden)
        logits = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        return new_hidden, logits[:, 0]


def aggregate(prob: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """STM's soft aggregation of per-object probabilities (…×N×… along ``dim``) into
    (log-odds, probabilities), each …×(N+1)×… with the background first.

    Background = product of (1 - p); all clamped away from 0 and 1 before the log-odds.
    Run it in float32: 1 - 1e-7 rounds to 1 in float16 and the log-odds become infinite.
    """
    background = torch.prod(1 - prob, dim=dim, keepdim=True)
    with_bg = torch.cat([background, prob], dim).clamp(AGGREGATE_EPS, 1 - AGGREGATE_EPS)
    logits = torch.log(with_bg / (1 - with_bg))
    return logits, F.softmax(logits, dim=dim)
