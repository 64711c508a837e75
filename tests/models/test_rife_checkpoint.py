"""Released checkpoints load unchanged; anything else fails naming the tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.rife.checkpoint import (
    CheckpointError,
    expected_shapes,
    load_ifnet,
    matching_versions,
    read_state_dict,
)
from models.rife.spec import SPECS, get_spec
from tests.hashed_weights import hashed_state_dict


def _tsv_shapes(conformance_dir: Path, version: str) -> dict[str, tuple[int, ...]]:
    lines = (conformance_dir / "rife" / f"rife_{version}_state_dict.tsv").read_text().splitlines()[1:]
    rows = [line.split("\t") for line in lines]
    return {name: tuple(int(n) for n in shape.split("x")) for name, shape in rows}


@pytest.mark.parametrize("version", ["4.0", "4.6", "4.26"])
def test_network_has_exactly_the_released_tensors(conformance_dir: Path, version: str) -> None:
    assert expected_shapes(get_spec(version)) == _tsv_shapes(conformance_dir, version)


@pytest.mark.parametrize("version", list(SPECS))
def test_releases_are_told_apart_by_their_shapes(version: str) -> None:
    """All but 4.25 and 4.26, which share one layout and differ only in trained values."""
    fits = matching_versions(hashed_state_dict(expected_shapes(get_spec(version))))
    assert fits == (["4.25", "4.26"] if version in ("4.25", "4.26") else [version])


def test_released_v40_checkpoint_loads_unchanged(rife_v40_weights: Path) -> None:
    raw = read_state_dict(rife_v40_weights)
    assert all(k.startswith("module.") for k in raw)
    assert any(k.startswith("module.block_tea.") for k in raw), "training-only keys are in the file"
    assert any(k.startswith("module.contextnet.") for k in raw)
    net = load_ifnet(rife_v40_weights, get_spec("4.0"))
    loaded = net.state_dict()["blocks.3.lastconv.weight"]
    assert torch.equal(loaded, raw["module.block3.lastconv.weight"])


def _hashed(version: str) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in hashed_state_dict(expected_shapes(get_spec(version))).items()}


def test_missing_tensor_is_named() -> None:
    state = _hashed("4.26")
    del state["module.encode.cnn3.bias"]
    del state["module.block4.lastconv.0.weight"]
    with pytest.raises(CheckpointError) as info:
        load_ifnet(state, get_spec("4.26"))
    assert "missing encode.cnn3.bias" in str(info.value)
    assert "missing block4.lastconv.0.weight" in str(info.value)


def test_misshaped_tensor_is_named_with_both_shapes() -> None:
    state = _hashed("4.6")
    state["module.block1.convblock.3.beta"] = torch.ones(1, 64, 1, 1)
    with pytest.raises(
        CheckpointError, match=r"block1\.convblock\.3\.beta: expected 1x128x1x1, found 1x64x1x1"
    ):
        load_ifnet(state, get_spec("4.6"))


def test_wrong_release_suggests_the_right_one() -> None:
    with pytest.raises(CheckpointError, match=r"fit rife-4\.25 or rife-4\.26"):
        load_ifnet(_hashed("4.26"), get_spec("4.6"))


def test_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "flownet.pkl"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_ifnet(bad, get_spec("4.0"))
