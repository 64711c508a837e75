"""Loading released VideoMAE / VideoMAE V2 fine-tuned checkpoints unchanged, in both
layouts (``shared/conformance/videomae/*_state_dict.tsv``):

- ``opengvlab``: OpenGVLab/VideoMAEv2's ``.pth`` (``patch_embed.proj``, ``blocks.i.attn.qkv``
  with ``q_bias`` / ``v_bias``, ``fc_norm``, ``head``), its state dict possibly wrapped in
  ``module`` or ``model`` (or prefixed ``module.``);
- ``hf``: HuggingFace's ``model.safetensors`` (``videomae.encoder.layer.i.attention.attention
  .query`` / ``key`` / ``value``, ``classifier``), mapped onto the first.

The architecture follows from the tensors' widths. A 710-class head (Kinetics-710) is
reduced to Kinetics-400 with ``label_710to400.json``; a 400-class head is used as it is.
Every tensor must be present with its exact shape: errors name each missing, mis-shaped
and unexpected one, and the layout the file fits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from models.rife.checkpoint import CheckpointError
from models.tensor_check import mismatches
from models.videomae.config import ARCHS, VideoMAEConfig
from models.videomae.labels import K400_CLASSES, K710_CLASSES, k710_rows_of_k400
from models.videomae.network import VideoViT

__all__ = ["CheckpointError", "expected_shapes", "hf_shapes", "load_videomae", "read_tensors", "to_hf"]

Layout = Literal["opengvlab", "hf"]
WRAPPERS = ("module", "model", "state_dict")  # why: how released .pth files wrap their state dict

# HuggingFace name → OpenGVLab name, for every tensor but the split qkv weight
_HF_LAYER = "videomae.encoder.layer.{i}."
_HF_RENAMES = {
    "attention.attention.query.bias": "attn.q_bias",
    "attention.attention.value.bias": "attn.v_bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
}
_HF_TOP = {
    "videomae.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "videomae.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "fc_norm.weight": "fc_norm.weight",
    "fc_norm.bias": "fc_norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
_QKV = ("query", "key", "value")


def expected_shapes(config: VideoMAEConfig) -> dict[str, tuple[int, ...]]:
    """OpenGVLab name → shape of every tensor of the network; built on meta."""
    with torch.device("meta"):
        net = VideoViT(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def hf_shapes(config: VideoMAEConfig) -> dict[str, tuple[int, ...]]:
    """HuggingFace name → shape of every tensor of the same network."""
    ours = expected_shapes(config)
    shapes = {hf: ours[og] for hf, og in _HF_TOP.items()}
    for i in range(config.depth):
        prefix = _HF_LAYER.format(i=i)
        for part in _QKV:
            shapes[f"{prefix}attention.attention.{part}.weight"] = (config.width, config.width)
        for hf, og in _HF_RENAMES.items():
            shapes[prefix + hf] = ours[f"blocks.{i}.{og}"]
    return shapes


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """A checkpoint file's tensors (safetensors or a PyTorch pickle, never executing code),
    unwrapped from ``module`` / ``model`` and without a ``module.`` prefix."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn download, or not a checkpoint at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    while isinstance(state, Mapping) and len(state) == 1 and next(iter(state)) in WRAPPERS:
        state = next(iter(state.values()))
    for wrapper in WRAPPERS:  # a dict with a state dict beside other entries (epoch, optimizer)
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}


def layout_of(tensors: Mapping[str, Tensor], source: str) -> Layout:
    if any(name.startswith("videomae.") for name in tensors):
        return "hf"
    if "patch_embed.proj.weight" in tensors:
        return "opengvlab"
    raise CheckpointError(
        f"{source} is neither VideoMAE layout: no videomae.* tensors (HuggingFace) and no "
        f"patch_embed.proj.weight (OpenGVLab); found e.g. {sorted(tensors)[:5]}"
    )


def config_of(tensors: Mapping[str, Tensor], layout: Layout, source: str) -> VideoMAEConfig:
    """The architecture and head size the tensors were trained with."""
    patch, head = ("patch_embed.proj.weight", "head.weight")
    if layout == "hf":
        patch, head = "videomae.embeddings.patch_embeddings.projection.weight", "classifier.weight"
    width = int(tensors[patch].shape[0]) if patch in tensors else None
    arch = next((c for c in ARCHS.values() if c.width == width), None)
    if arch is None:
        widths = {name: c.width for name, c in ARCHS.items()}
        raise CheckpointError(f"{source} ({layout} layout): token width {width} is none of {widths}")
    classes = int(tensors[head].shape[0]) if head in tensors else arch.classes
    return arch.with_classes(classes)


def check_tensors(
    tensors: Mapping[str, Tensor],
    expected: Mapping[str, tuple[int, ...]],
    layout: Layout,
    arch: str,
    source: str,
) -> None:
    """Raise ``CheckpointError`` naming every missing, mis-shaped and unexpected tensor."""
    problems = mismatches(tensors, expected)
    if problems:
        raise CheckpointError(
            "\n".join([f"{source} fits the {layout} layout of VideoMAE {arch}, but:", *problems])
        )


def from_hf(tensors: Mapping[str, Tensor], depth: int) -> dict[str, Tensor]:
    """HuggingFace names → OpenGVLab's: query, key and value weights stack into ``qkv``."""
    out = {og: tensors[hf] for hf, og in _HF_TOP.items()}
    for i in range(depth):
        prefix = _HF_LAYER.format(i=i)
        weights = [tensors[f"{prefix}attention.attention.{part}.weight"] for part in _QKV]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(weights, 0)
        out |= {f"blocks.{i}.{og}": tensors[prefix + hf] for hf, og in _HF_RENAMES.items()}
    return out


def to_hf(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """OpenGVLab names → HuggingFace's (the inverse of ``from_hf``), as the conformance
    README states the two layouts hold the same tensors."""
    out = {hf: tensors[og] for hf, og in _HF_TOP.items() if og in tensors}
    blocks = {int(m[1]) for name in tensors if (m := re.match(r"blocks\.(\d+)\.", name))}
    for i in sorted(blocks):
        prefix = _HF_LAYER.format(i=i)
        for part, weight in zip(_QKV, tensors[f"blocks.{i}.attn.qkv.weight"].chunk(3, 0), strict=True):
            out[f"{prefix}attention.attention.{part}.weight"] = weight
        out |= {prefix + hf: tensors[f"blocks.{i}.{og}"] for hf, og in _HF_RENAMES.items()}
    return out


def load_videomae(source: str | Path | Mapping[str, Tensor], classes: int = K400_CLASSES) -> VideoViT:
    """An eval-mode float32 ``VideoViT`` with a checkpoint's (file or state dict) weights and
    a head of ``classes`` outputs: a Kinetics-710 head is reduced to Kinetics-400."""
    name = str(source) if isinstance(source, str | Path) else "state dict"
    tensors = read_tensors(source) if isinstance(source, str | Path) else dict(source)
    layout = layout_of(tensors, name)
    config = config_of(tensors, layout, name)
    expected = hf_shapes(config) if layout == "hf" else expected_shapes(config)
    check_tensors(tensors, expected, layout, config.arch, name)
    state = from_hf(tensors, config.depth) if layout == "hf" else dict(tensors)
    state, config = _reduce_head(state, config, classes, name)
    with torch.device("meta"):
        net = VideoViT(config)
    # copies in float32 (the caller's tensors stay its own)
    net.load_state_dict(
        {k: v.to(torch.float32, copy=True) for k, v in state.items()}, strict=True, assign=True
    )
    return net.eval()


def _reduce_head(
    state: dict[str, Tensor], config: VideoMAEConfig, classes: int, source: str
) -> tuple[dict[str, Tensor], VideoMAEConfig]:
    if config.classes == classes:
        return state, config
    if config.classes == K710_CLASSES and classes == K400_CLASSES:
        rows = torch.tensor(k710_rows_of_k400())
        state = state | {"head.weight": state["head.weight"][rows], "head.bias": state["head.bias"][rows]}
        return state, config.with_classes(classes)
    raise CheckpointError(
        f"{source}: its head has {config.classes} classes; {classes} asked for "
        f"(a {K710_CLASSES}-class head reduces to {K400_CLASSES}, nothing else is mapped)"
    )
