"""The ResNet pieces of XMem's two encoders, written here (no torchvision).

Names follow torchvision's ResNet (``conv1``, ``bn1``, ``layerN.i.conv1``,
``layerN.i.downsample.0/1``) because XMem's checkpoints were initialised from it. Only the
trunk to stride 16 is built: XMem never uses ``layer4`` or the classifier.
"""

from __future__ import annotations

from torch import Tensor, nn

# why: torchvision's stem and stage widths (He et al., "Deep Residual Learning", CVPR 2016)
STEM_WIDTH = 64
STAGE_WIDTHS = (64, 128, 256)


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """1×1 projection of the shortcut, named ``downsample.0`` (conv) and ``downsample.1`` (bn)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3×3 convs and a shortcut."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        needs_projection = stride != 1 or c_in != width
        self.downsample: nn.Module = _downsample(c_in, width, stride) if needs_projection else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet-50 block: 1×1 reduce, 3×3 (strided, as torchvision "v1.5"), 1×1 expand ×4."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        needs_projection = stride != 1 or c_in != c_out
        self.downsample: nn.Module = _downsample(c_in, c_out, stride) if needs_projection else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def make_stage(
    block: type[BasicBlock | Bottleneck], c_in: int, width: int, count: int, stride: int
) -> nn.Sequential:
    """``count`` blocks; the first changes width and stride, the rest keep them."""
    c_out = width * block.expansion
    blocks = [block(c_in, width, stride)] + [block(c_out, width) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


def stem(c_in: int) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d]:
    """conv1 7×7/2, bn1, maxpool 3×3/2 (B×C×H×W → B×64×H/4×W/4, C = 3, or 5 with masks).

    Returned as parts, not a module: the checkpoints hold them directly under the encoder
    (``key_encoder.conv1``), with no extra name level.
    """
    conv1 = nn.Conv2d(c_in, STEM_WIDTH, 7, 2, 3, bias=False)
    return conv1, nn.BatchNorm2d(STEM_WIDTH), nn.MaxPool2d(3, 2, 1)


def resnet50_stages() -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """ResNet-50's first three stages (3, 4, 6 Bottlenecks): 64 → 256 (/4), 512 (/8), 1024 (/16)."""
    s4 = make_stage(Bottleneck, STEM_WIDTH, STAGE_WIDTHS[0], 3, 1)
    s8 = make_stage(Bottleneck, STAGE_WIDTHS[0] * 4, STAGE_WIDTHS[1], 4, 2)
    s16 = make_stage(Bottleneck, STAGE_WIDTHS[1] * 4, STAGE_WIDTHS[2], 6, 2)
    return s4, s8, s16


def resnet18_stages() -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """ResNet-18's first three stages (2 BasicBlocks each): 64 → 64 (/4), 128 (/8), 256 (/16)."""
    s4 = make_stage(BasicBlock, STEM_WIDTH, STAGE_WIDTHS[0], 2, 1)
    s8 = make_stage(BasicBlock, STAGE_WIDTHS[0], STAGE_WIDTHS[1], 2, 2)
    s16 = make_stage(BasicBlock, STAGE_WIDTHS[1], STAGE_WIDTHS[2], 2, 2)
    return s4, s8, s16
