"""XMem is XMem: the released tensor layout, every unit vector of the reference, the
export-friendly rewrites equal to the reference's ops, checkpoint errors, the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from models.xmem.checkpoint import CheckpointError, expected_shapes, load_xmem
from models.xmem.config import XMemConfig, XMemConfigError
from models.xmem.modules import ChannelGate, HiddenUpdater, aggregate
from models.xmem.network import XMem, normalize, others_of
from tests.hashed_weights import xmem_hashed_state_dict
from tests.models.xmem_support import hashed_xmem

# why: the conformance README's bound for float32 implementations
TOLERANCE = 1e-4
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def tsv_entries(conformance_dir: Path) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of every reference tensor, in the reference's order."""
    lines = (conformance_dir / "xmem" / "xmem_state_dict.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["name", "shape", "dtype"]
    entries = []
    for line in lines[1:]:
        name, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        entries.append((name, dims, DTYPES[dtype]))
    return entries


def unit_image(vectors: Any) -> Tensor:
    """unit/frame_u8 H×W×3 → the network's input 1×3×H×W."""
    frame = torch.from_numpy(vectors["unit/frame_u8"]).permute(2, 0, 1).float() / 255
    return normalize(frame)[None]


def unit_masks(vectors: Any) -> Tensor:
    """Objects 1 and 2 of unit/mask_u8 as float masks, 1×2×H×W."""
    labels = torch.from_numpy(vectors["unit/mask_u8"])
    return torch.stack([(labels == 1).float(), (labels == 2).float()])[None]


def unit(vectors: Any, name: str) -> Tensor:
    return torch.from_numpy(vectors[f"unit/{name}"])


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, f"{tuple(a.shape)} != {tuple(b.shape)}"
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="module")
def vectors(conformance_dir: Path) -> Any:
    return np.load(conformance_dir / "xmem" / "xmem_vectors.npz")


@pytest.fixture(scope="module")
def net() -> XMem:
    return hashed_xmem()


# --- the tensor layout ---------------------------------------------------------------


def test_state_dict_is_the_reference_layout(conformance_dir: Path) -> None:
    """Same names in the same order, same shapes and dtypes (0-d int64 batch counters too)."""
    with torch.device("meta"):
        state = XMem().state_dict()
    ours = [(k, tuple(v.shape), v.dtype) for k, v in state.items()]
    assert ours == tsv_entries(conformance_dir)
    assert len(ours) == 412
    assert expected_shapes() == {name: shape for name, shape, _ in tsv_entries(conformance_dir)}


def test_hashed_weights_from_the_tsv_load_strict(conformance_dir: Path, net: XMem) -> None:
    """The recipe applied to the TSV's list loads, and gives the same tensors as the fixture's."""
    layout = {name: (shape, dtype) for name, shape, dtype in tsv_entries(conformance_dir)}
    from_tsv = load_xmem(xmem_hashed_state_dict(layout)).state_dict()
    assert all(torch.equal(from_tsv[k], v) for k, v in net.state_dict().items())


def test_parameter_count_is_the_papers() -> None:
    with torch.device("meta"):
        count = sum(p.numel() for p in XMem().parameters())
    assert round(count / 1e6, 1) == 62.2  # the README: 62.2 M parameters


# --- the unit vectors ------------------------------------------------------------------


def test_encode_key_matches_reference(net: XMem, vectors: Any) -> None:
    with torch.inference_mode():
        outputs = net.encode_key(unit_image(vectors))
    names = ("key", "shrinkage", "selection", "f16", "f8", "f4")
    for name, out in zip(names, outputs, strict=True):
        assert max_diff(out, unit(vectors, name)) < TOLERANCE, name


def test_encode_value_matches_reference(net: XMem, vectors: Any) -> None:
    with torch.inference_mode():
        value, hidden = net.encode_value(
            unit_image(vectors), unit(vectors, "f16"), unit(vectors, "hidden_in"), unit_masks(vectors)
        )
    assert max_diff(value, unit(vectors, "value")) < TOLERANCE
    assert max_diff(hidden, unit(vectors, "value_hidden")) < TOLERANCE


def test_encode_value_without_deep_update_keeps_hidden(net: XMem, vectors: Any) -> None:
    hidden_in = unit(vectors, "hidden_in")
    with torch.inference_mode():
        value, hidden = net.encode_value(
            unit_image(vectors), unit(vectors, "f16"), hidden_in, unit_masks(vectors), is_deep_update=False
        )
    assert torch.equal(hidden, hidden_in)
    assert max_diff(value, unit(vectors, "value")) < TOLERANCE


def test_segment_matches_reference(net: XMem, vectors: Any) -> None:
    f16, f8, f4 = (unit(vectors, n) for n in ("f16", "f8", "f4"))
    with torch.inference_mode():
        hidden, logits, prob = net.segment(
            f16, f8, f4, unit(vectors, "readout_in"), unit(vectors, "hidden_in")
        )
    assert hidden is not None
    assert max_diff(hidden, unit(vectors, "segment_hidden")) < TOLERANCE
    assert max_diff(logits, unit(vectors, "segment_logits")) < TOLERANCE
    assert max_diff(prob, unit(vectors, "segment_prob")) < TOLERANCE
    with torch.inference_mode():
        no_hidden, logits_again, _ = net.segment(
            f16, f8, f4, unit(vectors, "readout_in"), unit(vectors, "hidden_in"), h_out=False
        )
    assert no_hidden is None and torch.equal(logits, logits_again)


def test_others_channel_is_the_sum_of_the_other_masks() -> None:
    masks = torch.rand(2, 3, 8, 8)
    expected = torch.stack([masks[:, [j for j in range(3) if j != i]].sum(1) for i in range(3)], 1)
    assert max_diff(others_of(masks), expected) < 1e-6
    assert torch.equal(others_of(masks[:, :1]), torch.zeros(2, 1, 8, 8))


def test_aggregate_puts_background_first_and_sums_to_one() -> None:
    prob = torch.tensor([0.9, 0.2]).view(2, 1, 1).expand(2, 4, 4)
    logits, agg = aggregate(prob, dim=0)
    assert agg.shape == (3, 4, 4)
    assert torch.allclose(agg.sum(0), torch.ones(4, 4))
    background = (1 - 0.9) * (1 - 0.2)
    assert float(logits[0, 0, 0]) == pytest.approx(np.log(background / (1 - background)), abs=1e-5)
    saturated, _ = aggregate(torch.ones(1, 2, 2), dim=0)  # the clamp keeps log-odds finite
    assert bool(torch.isfinite(saturated).all())


# --- the export rewrites equal the reference's ops -------------------------------------


def test_channel_gate_pooling_equals_the_reference_kernel_pooling() -> None:
    """mean/amax over H, W = the reference's avg/max_pool2d with kernel (H, W)."""
    torch.manual_seed(0)
    gate = ChannelGate(64).eval()
    x = torch.randn(3, 64, 5, 7)
    size = (x.shape[2], x.shape[3])
    avg = F.avg_pool2d(x, size, stride=size)
    peak = F.max_pool2d(x, size, stride=size)
    assert max_diff(x.mean(dim=(2, 3)), F.adaptive_avg_pool2d(x, 1).flatten(1)) < 1e-6
    reference = x * torch.sigmoid(gate.mlp(avg) + gate.mlp(peak))[:, :, None, None]
    with torch.inference_mode():
        assert max_diff(gate(x), reference) < 1e-6


@pytest.mark.parametrize("factor", [2, 4])
def test_avg_pool_equals_area_interpolation(factor: int) -> None:
    x = torch.randn(3, 16, 8 * factor, 12 * factor)
    area = F.interpolate(x, scale_factor=1 / factor, mode="area")
    assert max_diff(F.avg_pool2d(x, factor), area) < 1e-6


def test_hidden_updater_equals_the_reference_with_area_downsampling() -> None:
    torch.manual_seed(0)
    updater = HiddenUpdater((32, 16, 17), 16, 8).eval()
    g16, g8, g4 = torch.randn(2, 32, 3, 4), torch.randn(2, 16, 6, 8), torch.randn(2, 17, 12, 16)
    h = torch.randn(2, 8, 3, 4)
    with torch.inference_mode():
        g = updater.g16_conv(g16)
        g = g + updater.g8_conv(F.interpolate(g8, scale_factor=0.5, mode="area"))
        g = g + updater.g4_conv(F.interpolate(g4, scale_factor=0.25, mode="area"))
        values = updater.transform(torch.cat([g, h], 1))
        forget, update = torch.sigmoid(values[:, :8]), torch.sigmoid(values[:, 8:16])
        reference = forget * h * (1 - update) + update * torch.tanh(values[:, 16:])
        assert max_diff(updater(g16, g8, g4, h), reference) < 1e-5


# --- checkpoints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state(net: XMem) -> dict[str, Tensor]:
    return net.state_dict()


def test_module_prefix_is_stripped(state: dict[str, Tensor]) -> None:
    loaded = load_xmem({f"module.{k}": v for k, v in state.items()})
    assert not loaded.training
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name
        assert tensor.data_ptr() != state[name].data_ptr(), "the loaded network owns its tensors"
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in loaded.parameters())


def test_checkpoint_errors_name_every_bad_tensor(state: dict[str, Tensor]) -> None:
    broken = dict(state)
    del broken["decoder.pred.weight"]
    del broken["key_encoder.layer3.5.bn3.running_var"]
    broken["value_encoder.conv1.weight"] = torch.zeros(64, 4, 7, 7)  # a single-object network
    broken["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_xmem(broken)
    message = str(info.value)
    assert "missing decoder.pred.weight" in message
    assert "missing key_encoder.layer3.5.bn3.running_var" in message
    assert "wrong shape value_encoder.conv1.weight: expected 64x5x7x7, found 64x4x7x7" in message
    assert "unexpected decoder.extra.weight" in message


def test_unreadable_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "XMem.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"XMem\.pth"):
        load_xmem(path)


def test_checkpoint_file_loads_and_is_checked(tmp_path: Path, state: dict[str, Tensor]) -> None:
    """A file saved from DataParallel loads; a trimmed one fails naming the file and tensors."""
    whole = tmp_path / "XMem.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, whole)
    assert torch.equal(load_xmem(whole).decoder.pred.weight, state["decoder.pred.weight"])
    path = tmp_path / "XMem-trimmed.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("decoder.")}, path)
    with pytest.raises(CheckpointError, match=r"XMem-trimmed\.pth does not fit XMem") as info:
        load_xmem(path)
    assert "missing decoder.fuser.block1.conv1.weight" in str(info.value)
    assert "... and 20 more missing" in str(info.value)  # 40 decoder tensors, 20 listed


# --- the config --------------------------------------------------------------------------


def test_config_defaults_are_the_papers() -> None:
    config = XMemConfig()
    assert (config.key_dim, config.value_dim, config.hidden_dim) == (64, 512, 64)
    assert (config.mem_every, config.deep_update_every, config.top_k) == (5, -1, 30)
    assert (config.min_mid_term_frames, config.max_mid_term_frames) == (5, 10)
    assert (config.num_prototypes, config.max_long_term_elements) == (128, 10000)
    assert config.enable_long_term and config.enable_long_term_count_usage


def test_config_reads_the_conformance_settings(conformance_dir: Path) -> None:
    raw = json.loads((conformance_dir / "xmem" / "xmem_vectors.json").read_text())["config"]
    config = XMemConfig.from_dict(raw)
    assert config.top_k == 8 and config.num_prototypes == 6 and config.max_long_term_elements == 40


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"topk": 5}, "unknown XMem setting"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"mem_every": 2.5}, "mem_every must be an integer"),
        ({"enable_long_term": 1}, "enable_long_term must be a bool"),
        ({"deep_update_every": 0}, "deep_update_every must be -1"),
        ({"min_mid_term_frames": 10}, "min_mid_term_frames .* must be below max_mid_term_frames"),
        ({"num_prototypes": 10000}, "num_prototypes .* must be below max_long_term_elements"),
    ],
)
def test_config_rejects_bad_settings(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(XMemConfigError, match=message):
        XMemConfig().replace(**overrides)
