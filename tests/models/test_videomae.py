"""The clip encoder is VideoMAE V2: every conformance case on every engine, both released
checkpoint layouts, the 710-class head, clear errors, the registry and its download from a
local HTTP server, and ``python -m models embed``."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from models.repository import Format
from models.runtime import EngineKind
from models.videomae.checkpoint import CheckpointError, expected_shapes, hf_shapes, load_videomae, to_hf
from models.videomae.config import get_config
from models.videomae.export import VideoMAEEngines, eager_engines, export_videomae, load_engines
from models.videomae.frames import fit, tube_keep
from models.videomae.labels import k400_labels, k710_rows_of_k400
from models.videomae.network import VideoViT, gflops, select, tokens_of
from models.weights.fetch import ChecksumError, fetch
from models.weights.registry import UrlSource, get_entry
from tests.conftest import REPO_ROOT
from tests.hashed_weights import hashed_state_dict
from tests.models.test_fetch import FakeServer, Route, server  # noqa: F401  (the fixture)

# why: the conformance README's bound for every case on float32 engines
TOLERANCE = 1e-3
ENGINES: list[Any] = [
    pytest.param("eager"),
    pytest.param("torchscript"),
    pytest.param(
        "onnx",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed"
        ),
    ),
]


@cache
def hashed(arch: str) -> dict[str, torch.Tensor]:
    """The conformance recipe's weights, in the OpenGVLab layout."""
    return hashed_state_dict(expected_shapes(get_config(arch)))


@cache
def hashed_net(arch: str) -> VideoViT:
    return load_videomae(hashed(arch))


@pytest.fixture(scope="module")
def vectors(conformance_dir: Path) -> Any:
    return np.load(conformance_dir / "videomae" / "videomae_vectors.npz")


@pytest.fixture(scope="module")
def spec(conformance_dir: Path) -> dict[str, Any]:
    return dict(json.loads((conformance_dir / "videomae" / "videomae_vectors.json").read_text()))


_ENGINES: dict[tuple[str, str], VideoMAEEngines] = {}


def engines_of(arch: str, kind: EngineKind, tmp_path_factory: pytest.TempPathFactory) -> VideoMAEEngines:
    """One set of engines per architecture and kind for the module (exported once)."""
    if (arch, kind) not in _ENGINES:
        if kind == "eager":
            _ENGINES[arch, kind] = eager_engines(hashed_net(arch))
        else:
            fmt: Format = "onnx" if kind == "onnx" else "torchscript"
            repo = tmp_path_factory.mktemp(f"videomae-{arch}")
            folder, _ = export_videomae(hashed_net(arch), repo, fmt, model_name=f"videomae-{arch}-k400")
            _ENGINES[arch, kind] = load_engines(folder, kind)
    return _ENGINES[arch, kind]


def run_case(engines: VideoMAEEngines, vectors: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    clips = torch.from_numpy(vectors[f"{name}/clips_u8"])
    tokens, positions = engines.embed(clips)
    if f"{name}/keep" in vectors.files:
        tokens, positions = select(tokens, positions, torch.from_numpy(vectors[f"{name}/keep"]))
    embedding, logits = engines.encode(tokens, positions)
    return embedding.float(), logits.float()


def max_abs(got: torch.Tensor, want: np.ndarray) -> float:
    assert tuple(got.shape) == want.shape
    return float((got.cpu() - torch.from_numpy(want)).abs().max())


@pytest.mark.parametrize("arch", ["vit-s", "vit-b"])
@pytest.mark.parametrize("layout", ["opengvlab", "hf"])
def test_layouts_equal_the_conformance_lists(arch: str, layout: str, conformance_dir: Path) -> None:
    path = conformance_dir / "videomae" / f"videomae_{arch}_k400_{layout}_state_dict.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    listed = {name: tuple(int(d) for d in shape.split("x")) for name, shape, _ in rows}
    ours = expected_shapes(get_config(arch)) if layout == "opengvlab" else hf_shapes(get_config(arch))
    assert ours == listed
    assert all(dtype == "float32" for _, _, dtype in rows)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_case_within_tolerance(
    engine: EngineKind, vectors: Any, spec: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    failures = []
    for name, case in spec["cases"].items():
        embedding, logits = run_case(engines_of(case["arch"], engine, tmp_path_factory), vectors, name)
        for what, got in (("embedding", embedding), ("logits", logits)):
            error = max_abs(got, vectors[f"{name}/{what}"])
            if error > TOLERANCE:
                failures.append(f"{name} {what}: max abs {error:.2e}")
    assert not failures, "; ".join(failures)


def test_the_last_block_and_the_normalised_input(vectors: Any, spec: dict[str, Any]) -> None:
    """The blocks' output token by token (vit-s cases; vit-b's embedding and logits are checked
    on every engine above)."""
    for name, case in spec["cases"].items():
        if case["arch"] != "vit-s":
            continue
        net = hashed_net(case["arch"])
        clips = torch.from_numpy(vectors[f"{name}/clips_u8"])
        with torch.inference_mode():
            assert max_abs(net.normalise(clips), vectors[f"{name}/input"]) < 1e-6
            tokens, positions = net.embed(clips)
            if f"{name}/keep" in vectors.files:
                tokens, positions = select(tokens, positions, torch.from_numpy(vectors[f"{name}/keep"]))
            assert positions.shape[1] == case["tokens"]
            hidden = net.hidden(tokens, positions)
        want = vectors[f"{name}/hidden"]
        assert max_abs(hidden[:, : want.shape[1]], want) < TOLERANCE


def test_a_batch_of_two_clips_equals_each_alone(vectors: Any) -> None:
    engines = eager_engines(hashed_net("vit-s"))
    clips = torch.from_numpy(vectors["s8x112_full/clips_u8"])
    together, _ = engines.encode(*engines.embed(clips))
    for i in range(2):
        alone, _ = engines.encode(*engines.embed(clips[i : i + 1]))
        assert float((together[i] - alone[0]).abs().max()) < 1e-5
    assert float((together[0] - together[1]).abs().max()) > 1e-3, "the two clips differ"


def test_both_released_layouts_load_unchanged(tmp_path: Path, vectors: Any) -> None:
    """OpenGVLab's .pth (wrapped in ``model``, saved from DataParallel) and HuggingFace's
    model.safetensors give the same network."""
    pth, safetensors = tmp_path / "vit_s_k400.pth", tmp_path / "model.safetensors"
    torch.save({"model": {f"module.{k}": v for k, v in hashed("vit-s").items()}}, pth)
    save_file({k: v.contiguous() for k, v in to_hf(hashed("vit-s")).items()}, str(safetensors))
    nets = [load_videomae(pth), load_videomae(safetensors)]
    for net in nets:
        assert net.config == get_config("vit-s")
        embedding, logits = run_case(eager_engines(net), vectors, "s8x112_full")
        assert max_abs(embedding, vectors["s8x112_full/embedding"]) < TOLERANCE
        assert max_abs(logits, vectors["s8x112_full/logits"]) < TOLERANCE
    first, second = (n.state_dict() for n in nets)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_710_class_head_is_reduced_to_kinetics_400() -> None:
    state = dict(hashed("vit-s"))
    state["head.weight"] = torch.randn(710, 384)
    state["head.bias"] = torch.randn(710)
    net = load_videomae(state)
    rows = torch.tensor(k710_rows_of_k400())
    assert net.config.classes == 400 and torch.equal(net.head.weight, state["head.weight"][rows])
    assert torch.equal(net.head.bias, state["head.bias"][rows])
    assert load_videomae(state, classes=710).config.classes == 710
    with pytest.raises(CheckpointError, match="300 asked for"):
        load_videomae(state, classes=300)
    assert len(k400_labels()) == 400 and k400_labels()[0] == "abseiling"


def test_errors_name_every_bad_tensor_and_the_layout() -> None:
    state = dict(hashed("vit-s"))
    del state["blocks.3.attn.q_bias"]
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(10, 384)
    state["pos_embed"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as caught:
        load_videomae(state)
    message = str(caught.value)
    assert "opengvlab layout of VideoMAE vit-s" in message
    assert "missing blocks.3.attn.q_bias" in message and "unexpected pos_embed" in message
    assert "blocks.0.mlp.fc1.weight: expected 1536x384, found 10x384" in message
    hf = to_hf(hashed("vit-s"))
    del hf["videomae.encoder.layer.2.attention.attention.key.weight"]
    with pytest.raises(CheckpointError, match=r"hf layout(.|\n)*missing videomae.encoder.layer.2.attention"):
        load_videomae(hf)
    with pytest.raises(CheckpointError, match="neither VideoMAE layout"):
        load_videomae({"conv.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="token width 100"):
        load_videomae({"patch_embed.proj.weight": torch.zeros(100, 3, 2, 16, 16)})


def test_a_torn_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    for name in ("torn.pth", "torn.safetensors"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_videomae(tmp_path / name)


def test_fp16_torchscript_tracks_fp32(vectors: Any, tmp_path: Path) -> None:
    folder, metadata = export_videomae(
        hashed_net("vit-s"), tmp_path, "torchscript", model_name="v", fp16=True
    )
    assert metadata.precision == "fp16" and [t.dtype for t in metadata.inputs] == ["uint8"]
    half = load_engines(folder, "torchscript")
    embedding, logits = run_case(half, vectors, "s8x112_full")
    assert embedding.dtype == torch.float32
    # why 2e-2: half precision everywhere but LayerNorm and softmax, over 12 blocks
    assert max_abs(embedding, vectors["s8x112_full/embedding"]) < 2e-2
    assert max_abs(logits, vectors["s8x112_full/logits"]) < 2e-2


def test_tube_keep_and_the_cost_it_saves() -> None:
    keep = tube_keep(8, 14, 14, 0.25)
    assert keep.numel() == 8 * 49 and torch.equal(keep, keep.sort().values)
    per_slice = keep.view(8, 49) - torch.arange(8)[:, None] * 196
    assert all(torch.equal(per_slice[0], row) for row in per_slice), "the same positions in every slice"
    vit_b = get_config("vit-b")
    full = tokens_of(vit_b, 16, 224, 224)
    assert full == 1568
    assert gflops(vit_b, full) == pytest.approx(361, abs=2)  # the figure for vit-b in full
    assert gflops(vit_b, full, kept=full // 4) == pytest.approx(76, abs=2)
    assert gflops(vit_b, 4 * full, kept=full) < 1.1 * gflops(vit_b, full), "64 frames at 25% cost 16 in full"


def test_fit_keeps_a_frame_of_the_size_and_crops_others() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert fit(frame, 224) is frame
    wide = np.zeros((240, 426, 3), np.uint8)
    wide[:, 213:] = 255
    fitted = fit(wide, 224)
    assert fitted.shape == (224, 224, 3)
    assert fitted[:, :100].max() == 0 and fitted[:, 125:].min() == 255  # the centre, split as it was


def test_registry_entries_and_their_download(server: FakeServer, tmp_path: Path) -> None:  # noqa: F811
    """The registry's file fetched, verified by its size bounds, from a local mirror
    (VIDSERVE_WEIGHTS_MIRROR's argument), and loaded; a file of another size is refused."""
    for arch, repo in (("vit-s", "small"), ("vit-b", "base")):
        entry = get_entry(f"videomae-{arch}-k400")
        assert entry.family == "videomae" and entry.version == arch
        assert isinstance(entry.source, UrlSource)
        assert entry.source.url.endswith(
            f"MCG-NJU/videomae-{repo}-finetuned-kinetics/resolve/main/model.safetensors"
        )
        floats = 4 * sum(math.prod(s) for s in hf_shapes(get_config(arch)).values())
        assert entry.size_bounds is not None and entry.size_bounds[0] == floats
    safetensors = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in to_hf(hashed("vit-s")).items()}, str(safetensors))
    server.routes["/mirror/model.safetensors"] = Route(safetensors.read_bytes())
    entry = get_entry("videomae-vit-s-k400")
    path = fetch(entry, cache=tmp_path / "cache", progress=False, mirror=server.url("/mirror/"))
    assert path.name == "videomae-vit-s-k400.safetensors" and load_videomae(path).config.arch == "vit-s"
    server.routes["/short/model.safetensors"] = Route(b"x" * 1000)
    wrong = dataclasses.replace(entry, filename="short.safetensors")
    with pytest.raises(ChecksumError):
        fetch(wrong, cache=tmp_path / "cache", progress=False, mirror=server.url("/short/"))


def test_the_embed_cli(vectors: Any, tmp_path: Path) -> None:
    """A folder of frames (one conformance clip) → embedding.npy, logits.npy, labels.json
    and, with --raw, hidden.npy; with --keep, the dropped-token case."""
    weights = tmp_path / "vit_s.pth"
    torch.save(hashed("vit-s"), weights)
    for name in ("s8x112_full", "s8x112_tube25"):
        frames = tmp_path / name
        frames.mkdir()
        for t, frame in enumerate(vectors[f"{name}/clips_u8"][0]):
            Image.fromarray(frame).save(frames / f"{t:03d}.png")
        out = tmp_path / f"{name}-out"
        command = [
            sys.executable,
            "-m",
            "models",
            "embed",
            str(frames),
            "--arch",
            "vit-s",
            "--weights",
            str(weights),
        ]
        command += ["--size", "112", "--out", str(out), "--raw"]
        if f"{name}/keep" in vectors.files:
            np.save(tmp_path / "keep.npy", vectors[f"{name}/keep"])
            command += ["--keep", str(tmp_path / "keep.npy")]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        for what in ("embedding", "logits", "hidden"):
            got = np.load(out / f"{what}.npy")
            assert float(np.abs(got - vectors[f"{name}/{what}"][0]).max()) < TOLERANCE, (name, what)
        labels = json.loads((out / "labels.json").read_text())
        assert labels["tokens"] == 196 and labels["kept"] == vectors[f"{name}/hidden"].shape[1]
        best = int(np.argmax(vectors[f"{name}/logits"][0]))
        assert labels["labels"][0] == {**labels["labels"][0], "index": best, "label": k400_labels()[best]}
        assert done.stdout.splitlines()[0].endswith(k400_labels()[best])


def test_the_embed_cli_refuses_a_clip_it_cannot_run(tmp_path: Path) -> None:
    weights = tmp_path / "vit_s.pth"
    torch.save(hashed("vit-s"), weights)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(3):  # an odd frame count: no whole tubelet
        Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(frames / f"{t}.png")
    command = [
        sys.executable,
        "-m",
        "models",
        "embed",
        str(frames),
        "--arch",
        "vit-b",
        "--weights",
        str(weights),
    ]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "o")], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1 and "holds VideoMAE vit-s, not vit-b" in done.stderr
    command[command.index("vit-b")] = "vit-s"
    done = subprocess.run(
        [*command, "--size", "112", "--out", str(tmp_path / "o")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "multiple of 2 frames" in done.stderr and "Traceback" not in done.stderr


def test_export_cli_writes_both_parts(tmp_path: Path) -> None:
    weights = tmp_path / "vit_s.pth"
    torch.save(hashed("vit-s"), weights)
    command = [sys.executable, "-m", "models", "export", "videomae", "--model", "videomae-vit-s-k400"]
    command += ["--format", "torchscript", "--weights", str(weights), "--repository", str(tmp_path / "repo")]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "repo" / "videomae-vit-s-k400" / "torchscript-fp32"
    assert done.stdout.strip() == str(folder)
    assert (folder / "embed.ts").is_file() and (folder / "encode.ts").is_file()
    engines = load_engines(folder, "torchscript")
    assert engines.config == get_config("vit-s")
