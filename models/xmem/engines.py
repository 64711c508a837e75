"""XMem split into three engines, in the row layout, so one call serves many sessions.

A batch holds F frames (one per session, all padded to one H×W) and R object rows: each
session contributes its objects as rows, and ``frame_index`` (int64 R) names each row's
frame. Sessions with different object counts share a call; per-frame work (the key
encoder, the decoder's skip convs) runs once a frame. h = H/16.

    EncodeKey    in:  image F×3×H×W
                 out: key F×64×h×w, shrinkage F×1×h×w, selection F×64×h×w,
                      f16 F×1024×h×w, f8 F×512×2h×2w, f4 F×256×4h×4w
    EncodeValue  in:  image F×3×H×W, f16 F×1024×h×w, frame_index R, hidden R×64×h×w,
                      masks R×H×W, others R×H×W
                 out: value R×512×h×w, new_hidden R×64×h×w
    Segment      in:  f16, f8, f4, frame_index R, readout R×512×h×w, hidden R×64×h×w
                 out: logits R×H×W, new_hidden R×64×h×w

EncodeValue always deep-updates; the caller keeps the old hidden state when it was not a
deep-update frame. Segment's logits are per object, before sigmoid and soft aggregation
(``modules.aggregate``), which the caller runs per frame in float32.

Precision: an fp16 export computes in float16 and takes image and f16/f8/f4 in float16 —
they only travel between engines. What the memory core computes on (keys, shrinkage,
selection, values, readout, hidden state, masks, logits) crosses the boundary in float32:
affinities, top-k softmax and aggregation are where half precision breaks.
"""

from __future__ import annotations

from torch import Tensor, nn

from models.xmem.network import XMem

ENGINE_NAMES = ("encode_key", "encode_value", "segment")


class EncodeKey(nn.Module):
    """image F×3×H×W → key, shrinkage, selection (float32), f16, f8, f4 (as the image)."""

    def __init__(self, net: XMem) -> None:
        super().__init__()
        self.key_encoder = net.key_encoder
        self.key_proj = net.key_proj

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16)
        return key.float(), shrinkage.float(), selection.float(), f16, f8, f4


class EncodeValue(nn.Module):
    """image F×3×H×W, f16 F×1024×h×w, frame_index R, hidden R×k×h×w, masks R×H×W,
    others R×H×W → value R×512×h×w, deep-updated hidden R×k×h×w (both float32)."""

    def __init__(self, net: XMem) -> None:
        super().__init__()
        self.value_encoder = net.value_encoder

    def forward(
        self, image: Tensor, f16: Tensor, frame_index: Tensor, hidden: Tensor, masks: Tensor, others: Tensor
    ) -> tuple[Tensor, Tensor]:
        dtype = f16.dtype  # the engine's compute precision
        value, new_hidden = self.value_encoder(
            image, f16, frame_index, hidden.to(dtype), masks.to(dtype), others.to(dtype), True
        )
        return value.float(), new_hidden.float()


class Segment(nn.Module):
    """f16, f8, f4 (per frame), frame_index R, readout R×512×h×w, hidden R×k×h×w →
    logits R×H×W (per object, before aggregation), updated hidden R×k×h×w (both float32)."""

    def __init__(self, net: XMem) -> None:
        super().__init__()
        self.decoder = net.decoder

    def forward(
        self, f16: Tensor, f8: Tensor, f4: Tensor, frame_index: Tensor, readout: Tensor, hidden: Tensor
    ) -> tuple[Tensor, Tensor]:
        dtype = f16.dtype
        new_hidden, logits = self.decoder(f16, f8, f4, frame_index, readout.to(dtype), hidden.to(dtype), True)
        assert new_hidden is not None  # h_out=True always gives one; refines the type for TorchScript
        return logits.float(), new_hidden.float()


def engine_modules(net: XMem) -> dict[str, nn.Module]:
    """The three engines over ``net``'s own sub-networks (shared weights, no copies)."""
    return {"encode_key": EncodeKey(net), "encode_value": EncodeValue(net), "segment": Segment(net)}
