"""Exported engines are real: metadata, dynamic axes, fp16 warp in fp32, batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from models.repository import read_metadata
from models.rife.checkpoint import load_ifnet
from models.rife.export import ONNX_OPSET, export_rife
from models.rife.inference import Interpolator, to_padded
from models.rife.loading import ensure_engine
from models.rife.spec import SPECS, get_spec
from models.runtime import TorchRunner
from models.weights.fetch import sha256_file
from tests.models.rife_engines import engine_params, hashed_ifnet, make_runner

TOLERANCE = 1e-3  # why: the conformance README's bound for float32 engines
# why: half precision carries ~3 significant digits; measured ~4e-3 on CPU, bound with margin
FP16_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def vectors(conformance_dir: Path) -> Any:
    return np.load(conformance_dir / "rife" / "rife_vectors.npz")


def _two_different_pairs(vectors: Any, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """demo_a forward and demo_b backward, both padded to ``hw``: a batch of 2 unlike pairs."""
    img0 = torch.cat([to_padded(vectors["demo_a/frame0_u8"], hw), to_padded(vectors["demo_b/frame1_u8"], hw)])
    img1 = torch.cat([to_padded(vectors["demo_a/frame1_u8"], hw), to_padded(vectors["demo_b/frame0_u8"], hw)])
    return img0, img1


@pytest.mark.parametrize("version", list(SPECS))
@pytest.mark.parametrize("engine", [p for p in engine_params() if p.values[0] != "eager"])  # type: ignore[attr-defined]
def test_batch_of_two_pairs_matches_eager_one_by_one(
    engine: str, version: str, vectors: Any, tmp_path: Path, rife_v40_weights: Path
) -> None:
    """Every release, every exporter: one call on two different pairs, timesteps and a
    non-default scale equals eager run on each pair alone."""
    spec = get_spec(version)
    net = load_ifnet(rife_v40_weights, spec) if version == "4.0" else hashed_ifnet(version)
    runner = make_runner(net, engine, tmp_path)
    hw = spec.padded_size(256, 448, 0.5)
    img0, img1 = _two_different_pairs(vectors, hw)
    timestep, scale = torch.tensor([0.3, 0.8]), torch.tensor([0.5])
    batched, flags = runner(img0, img1, timestep, scale)
    assert batched.shape == (2, 3, *hw) and flags.shape == (2,)
    with torch.inference_mode():
        for i in range(2):
            alone, _ = net(img0[i : i + 1], img1[i : i + 1], timestep[i : i + 1], scale)
            assert float((batched[i] - alone[0]).abs().max()) < TOLERANCE
    assert float((batched[0] - batched[1]).abs().max()) > 0.1, "the two pairs must give different frames"


def test_onnx_metadata_and_dynamic_axes(tmp_path: Path, rife_v40_weights: Path) -> None:
    path = ensure_engine("rife-4.0", rife_v40_weights, "onnx", repository=tmp_path)
    metadata = read_metadata(path.parent)
    assert path == tmp_path / "rife-4.0" / "onnx-fp32" / "model.onnx"
    assert metadata.opset is not None and metadata.opset >= 17 == ONNX_OPSET
    assert metadata.weights_sha256 == sha256_file(rife_v40_weights)
    assert {"torch", "onnx", "onnxruntime"} <= set(metadata.exporter)
    assert [t.name for t in metadata.inputs] == ["img0", "img1", "timestep", "scale"]
    assert metadata.inputs[0].shape == ["batch", 3, "height", "width"]
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert {o.name for o in graph.output} == {"frame", "big_motion"}


def test_engine_is_reused_then_reexported_for_other_weights(tmp_path: Path, rife_v40_weights: Path) -> None:
    path = ensure_engine("rife-4.0", rife_v40_weights, "torchscript", repository=tmp_path)
    stamp = path.stat().st_mtime_ns
    assert (
        ensure_engine("rife-4.0", rife_v40_weights, "torchscript", repository=tmp_path).stat().st_mtime_ns
        == stamp
    )
    other = tmp_path / "other.pkl"
    state = torch.load(rife_v40_weights, map_location="cpu", weights_only=True)
    state["module.block0.lastconv.bias"] = state["module.block0.lastconv.bias"] + 1
    torch.save(state, other)
    ensure_engine("rife-4.0", other, "torchscript", repository=tmp_path)
    assert read_metadata(path.parent).weights_sha256 == sha256_file(other)


def _grid_sample_input_types(path: Path) -> list[int]:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert nodes, "the warp must be a GridSample"
    return [types[name] for node in nodes for name in node.input]


def test_fp16_onnx_keeps_the_warp_in_fp32(tmp_path: Path) -> None:
    net = hashed_ifnet("4.26")
    folder, metadata = export_rife(net, get_spec("4.26"), tmp_path, "onnx", fp16=True)
    assert metadata.precision == "fp16" and metadata.inputs[0].dtype == "float16"
    assert set(_grid_sample_input_types(folder / metadata.file)) == {onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("engine", [p for p in engine_params() if p.values[0] != "eager"])  # type: ignore[attr-defined]
def test_fp16_engine_tracks_fp32(engine: str, vectors: Any, rife_v40_weights: Path, tmp_path: Path) -> None:
    """Half precision measured against the float32 path, as the conformance README asks."""
    spec = get_spec("4.0")
    net = load_ifnet(rife_v40_weights, spec)
    half = Interpolator(spec, make_runner(net, engine, tmp_path, fp16=True), scene_change_threshold=None)
    full = Interpolator(spec, TorchRunner(net, "eager"), scene_change_threshold=None)
    frames = vectors["demo_b/frame0_u8"], vectors["demo_b/frame1_u8"]
    (out16,) = half.interpolate(*frames, [0.5])
    (out32,) = full.interpolate(*frames, [0.5])
    assert out16.dtype == np.float32
    assert float(np.abs(out16 - out32).max()) < FP16_TOLERANCE


ENCODER_RELEASES = [v for v, spec in SPECS.items() if spec.encoder_channels]


@pytest.mark.parametrize("version", ENCODER_RELEASES)
@pytest.mark.parametrize("engine", engine_params())
def test_encoder_and_flow_parts_equal_the_whole(
    engine: str, version: str, vectors: Any, tmp_path: Path
) -> None:
    """4.22+ split in two (what a stream runs, encoding each frame once) gives what the whole
    network gives, on every backend."""
    spec = get_spec(version)
    net = hashed_ifnet(version)
    encoder = make_runner(net, engine, tmp_path, part="encoder")
    flow = make_runner(net, engine, tmp_path, part="flow")
    hw = spec.padded_size(256, 448, 1.0)
    img0, img1 = _two_different_pairs(vectors, hw)
    timestep, scale = torch.tensor([0.3, 0.8]), torch.tensor([1.0])
    (f0,) = encoder(img0)
    (f1,) = encoder(img1)
    assert f0.shape == (2, spec.encoder_channels, *hw)
    got, flags = flow(img0, img1, f0, f1, timestep, scale)
    with torch.inference_mode():
        want, want_flags = net(img0, img1, timestep, scale)
    assert float((got - want).abs().max()) < TOLERANCE
    assert torch.equal(flags.cpu(), want_flags)


def test_a_release_without_an_encoder_has_no_parts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no feature encoder"):
        export_rife(hashed_ifnet("4.6"), get_spec("4.6"), tmp_path, "onnx", part="encoder")


@pytest.mark.parametrize("engine", [p for p in engine_params() if p.values[0] != "eager"])  # type: ignore[attr-defined]
def test_fp16_parts_at_half_scale_match_the_whole(engine: str, vectors: Any, tmp_path: Path) -> None:
    """The parts in half precision (features cross in float16) at scale 0.5, against the
    whole network in float32."""
    spec = get_spec("4.26")
    net = hashed_ifnet("4.26")
    encoder = make_runner(net, engine, tmp_path, fp16=True, part="encoder")
    flow = make_runner(net, engine, tmp_path, fp16=True, part="flow")
    hw = spec.padded_size(256, 448, 0.5)
    img0, img1 = _two_different_pairs(vectors, hw)
    timestep, scale = torch.tensor([0.3, 0.8]), torch.tensor([0.5])
    (f0,) = encoder(img0)
    (f1,) = encoder(img1)
    assert f0.dtype == torch.float16
    got, _ = flow(img0, img1, f0, f1, timestep, scale)
    with torch.inference_mode():
        want, _ = net(img0, img1, timestep, scale)
    assert float((got.float() - want).abs().max()) < FP16_TOLERANCE
