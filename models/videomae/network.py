"""The fine-tuned VideoMAE / VideoMAE V2 video ViT, with the reference's module names (the
OpenGVLab layout; ``checkpoint.py`` maps HuggingFace's onto it).

A clip of T frames, H×W, becomes T/2 × H/16 × W/16 tubelet tokens (a 2×16×16 Conv3d),
in (t, h, w) order: token ``i = t·(H/16)(W/16) + h·(W/16) + w``. There is no class token;
a fixed 1-D sine-cosine table over the token index is added. Then 12 pre-norm blocks
(joint space-time attention over every token), the mean over the tokens, ``fc_norm``, and
the head. ``embedding`` is the ``fc_norm`` output, before the head.

Dropped tokens (VideoMAE's masked encoder, the seeds' input masking): the table is added
per token index, and only the kept tokens go through the blocks and into the mean, so a
clip costs what its kept tokens cost. The network is split where a stream needs it:

    embed   frames uint8 B×T×H×W×3 → tokens B×N×D (no positions), positions int64 B×N
    encode  tokens B×K×D, positions int64 B×K → embedding B×D, logits B×classes (float32)

``encode`` adds the table for the positions it is given, so tokens embedded once (a
stream's earlier frames) can join a window at any place in it. In half precision the
LayerNorms and the attention softmax still compute in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.videomae.config import IMAGENET_MEAN, IMAGENET_STD, VideoMAEConfig

__all__ = ["VideoViT", "position_table", "select"]


def position_table(positions: Tensor, width: int, base: float = 10000.0) -> Tensor:
    """positions int64 …×K → the sine-cosine rows …×K×D: channel j of position p is
    sin (even j) or cos (odd j) of p / 10000^(2⌊j/2⌋/D), computed in float64 as the
    references compute their table (float32 loses the phase at thousands of tokens).
    ``base``: why 10000, the Transformer's sine-cosine base, as the references use it."""
    j = torch.arange(width, device=positions.device)
    rates = torch.pow(base, -(2 * torch.div(j, 2, rounding_mode="floor")).double() / width)
    angle = positions.double()[..., None] * rates  # …×K×D
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def select(tokens: Tensor, positions: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """The kept tokens: tokens B×N×D, positions B×N, keep int64 B×K (or K, the same for
    every clip) indices into N → B×K×D, B×K."""
    if keep.dim() == 1:
        keep = keep[None].expand(tokens.shape[0], -1)
    gathered = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
    return gathered, positions.gather(1, keep)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm that computes in float32 whatever its input's precision (fp16 engines)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention; the qkv projection stores only q and v biases (the key's is
    zero), as the released checkpoints do."""

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.scale = config.head_dim**-0.5
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(config.width))
        self.v_bias = nn.Parameter(torch.zeros(config.width))
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B×heads×K×d
        weights = ((q * self.scale) @ k.transpose(-2, -1)).float().softmax(-1).to(v.dtype)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_ratio * config.width)
        self.act = nn.GELU()  # why exact (not tanh): the references' nn.GELU()
        self.fc2 = nn.Linear(config.mlp_ratio * config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)); no layer scale."""

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(config.width, eps=config.eps)
        self.attn = Attention(config)
        self.norm2 = LayerNorm32(config.width, eps=config.eps)
        self.mlp = Mlp(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        kernel = (config.tubelet, config.patch, config.patch)
        self.proj = nn.Conv3d(3, config.width, kernel_size=kernel, stride=kernel)

    def forward(self, clip: Tensor) -> Tensor:
        """clip B×3×T×H×W → tokens B×N×D in (t, h, w) order."""
        return self.proj(clip).flatten(2).transpose(1, 2)


class VideoViT(nn.Module):
    """The encoder and its head."""

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.fc_norm = LayerNorm32(config.width, eps=config.eps)
        self.head = nn.Linear(config.width, config.classes)
        # why plain attributes: TorchScript types ints and lists, not the config dataclass
        self.width = config.width
        self.rgb_mean: list[float] = list(IMAGENET_MEAN)
        self.rgb_std: list[float] = list(IMAGENET_STD)

    def normalise(self, frames: Tensor) -> Tensor:
        """frames uint8 B×T×H×W×3 → B×3×T×H×W, (x/255 − mean)/std, in the network's precision."""
        x = frames.permute(0, 4, 1, 2, 3).float() / 255
        mean = torch.tensor(self.rgb_mean, device=x.device).view(3, 1, 1, 1)
        std = torch.tensor(self.rgb_std, device=x.device).view(3, 1, 1, 1)
        return ((x - mean) / std).to(self.head.weight.dtype)

    def embed(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """frames uint8 B×T×H×W×3 (T a multiple of 2, H and W of 16) → tokens B×N×D, and
        their positions (token indices) int64 B×N."""
        tokens = self.patch_embed(self.normalise(frames))
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None].expand(tokens.shape[0], -1)
        return tokens, positions

    def hidden(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens B×K×D, positions B×K → the last block's output B×K×D."""
        x = tokens + position_table(positions, self.width).to(tokens.dtype)
        for block in self.blocks:
            x = block(x)
        return x

    def encode(self, tokens: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """tokens B×K×D, positions B×K → embedding B×D and logits B×classes, float32."""
        embedding = self.fc_norm(self.hidden(tokens, positions).float().mean(1).to(tokens.dtype))
        return embedding.float(), self.head(embedding).float()

    def forward(self, frames: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """frames uint8 B×T×H×W×3, keep int64 B×K or K (None: every token) → embedding, logits."""
        tokens, positions = self.embed(frames)
        if keep is not None:
            tokens, positions = select(tokens, positions, keep)
        return self.encode(tokens, positions)


def tokens_of(config: VideoMAEConfig, frames: int, height: int, width: int) -> int:
    """Tokens of a clip: T/2 × H/16 × W/16."""
    return (frames // config.tubelet) * (height // config.patch) * (width // config.patch)


def gflops(config: VideoMAEConfig, tokens: int, kept: int | None = None) -> float:
    """Floating-point operations (2 per multiply-add) of one clip: ``embed`` over all its
    ``tokens`` (the Conv3d), and the blocks over the ``kept`` ones: per block 24·K·D² for the
    projections and the MLP, and 4·K²·D for attention."""
    k, d = tokens if kept is None else kept, config.width
    embed = 2 * tokens * d * 3 * config.tubelet * config.patch**2
    per_block = 2 * (4 + 2 * config.mlp_ratio) * k * d**2 + 4 * k**2 * d
    return (embed + config.depth * per_block) / 1e9


def check_clip(config: VideoMAEConfig, frames: int, height: int, width: int) -> None:
    """Raised early, with the numbers, rather than by a Conv3d deep inside."""
    if frames <= 0 or frames % config.tubelet or height % config.patch or width % config.patch:
        raise ValueError(
            f"a clip must have a positive multiple of {config.tubelet} frames and sides that are "
            f"multiples of {config.patch}; got {frames} frames of {height}×{width}"
        )
