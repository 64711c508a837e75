"""The offline command line: interpolate, segment, embed, fetch, export."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import embed_cli, segment_cli
from models.images import ImageError, read_rgb, write_png
from models.repository import FORMATS, default_repository
from models.rife.checkpoint import CheckpointError
from models.rife.inference import InterpolationInputError, timesteps_for_factor, to_uint8
from models.rife.scene import DEFAULT_SCENE_CHANGE_THRESHOLD
from models.rife.spec import SCALES, SPECS
from models.runtime import ENGINE_KINDS
from models.weights.fetch import FetchError, fetch_main
from models.weights.registry import DEFAULT_MODEL
from models.xmem.config import XMemConfigError
from models.xmem.inference_core import SegmentationInputError


def _add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("interpolate", help="frames between two images, with RIFE v4")
    p.add_argument("frame0", type=Path)
    p.add_argument("frame1", type=Path)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name (default {DEFAULT_MODEL})")
    p.add_argument("--weights", type=Path, help="a released flownet*.pkl, instead of the registry's")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--timestep", type=float, action="append", help="t in (0, 1); repeat for several")
    when.add_argument("--factor", type=int, help="N× frame rate: timesteps i/N for i in 1..N-1")
    p.add_argument("--scale", type=float, default=1.0, choices=SCALES, help="0.5 for 4K input")
    p.add_argument("--engine", choices=ENGINE_KINDS, default="eager")
    p.add_argument("--fp16", action="store_true", help="half-precision engine (torchscript/onnx)")
    p.add_argument(
        "--scene-change-threshold",
        type=float,
        default=DEFAULT_SCENE_CHANGE_THRESHOLD,
        help="thumbnail SSIM under which the pair is a cut and frame0 is repeated (0: off)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="timesteps per engine call")
    p.add_argument("--out", type=Path, required=True, help="a folder, or a file name for one timestep")
    p.add_argument("--raw", action="store_true", help="write float32 3×H×W .npy in [0, 1] instead of PNG")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a network into the model repository")
    p.add_argument("family", choices=["rife", "xmem", "videomae"])
    p.add_argument("--version", choices=list(SPECS), help="RIFE release (rife only)")
    p.add_argument(
        "--model",
        choices=["xmem", "xmem-s012", "videomae-vit-s-k400", "videomae-vit-b-k400"],
        help="the registry model (xmem: xmem or xmem-s012, the default xmem; videomae: required)",
    )
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--fp16", action="store_true")
    p.add_argument(
        "--part",
        default="full",
        choices=["full", "encoder", "flow"],
        help="rife 4.22+: the feature encoder or the flow network that takes its features (what the "
        "server runs), instead of the whole network",
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="a released checkpoint (flownet*.pkl, XMem.pth, a VideoMAE .pth or .safetensors)",
    )
    p.add_argument("--repository", type=Path, help="default: $VIDSERVE_MODEL_REPOSITORY or the cache")


def _output_paths(out: Path, timesteps: Sequence[float], raw: bool) -> list[Path]:
    suffix = ".npy" if raw else ".png"
    if len(timesteps) == 1 and out.suffix == suffix:
        out.parent.mkdir(parents=True, exist_ok=True)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"t{t:.4f}{suffix}" for t in timesteps]


def run_interpolate(args: argparse.Namespace) -> int:
    from models.rife.loading import load_interpolator

    timesteps = timesteps_for_factor(args.factor) if args.factor else (args.timestep or [0.5])
    frame0, frame1 = read_rgb(args.frame0), read_rgb(args.frame1)
    interpolator = load_interpolator(
        args.model,
        engine=args.engine,
        weights=args.weights,
        fp16=args.fp16,
        scene_change_threshold=args.scene_change_threshold or None,
    )
    paths = _output_paths(args.out, timesteps, args.raw)
    bar = tqdm(total=len(timesteps), unit="frame", disable=len(timesteps) < 2, desc="interpolating")
    for start in range(0, len(timesteps), max(1, args.batch_size)):
        chunk = timesteps[start : start + args.batch_size]
        frames = interpolator.interpolate(frame0, frame1, chunk, args.scale)
        for path, frame in zip(paths[start : start + len(chunk)], frames, strict=True):
            np.save(path, frame) if args.raw else write_png(path, to_uint8(frame))
            bar.update(1)
    bar.close()
    for path in paths:
        print(path)
    return 0


def run_export(args: argparse.Namespace) -> int:
    if args.family == "xmem":
        return run_export_xmem(args)
    if args.family == "videomae":
        return run_export_videomae(args)
    from models.rife.loading import ensure_engine
    from models.weights.fetch import resolve_weights

    if args.version is None:
        raise InterpolationInputError("export rife needs --version")
    model = f"rife-{args.version}"
    weights = resolve_weights(model, args.weights)
    repository = args.repository or default_repository()
    path = ensure_engine(model, weights, args.format, fp16=args.fp16, repository=repository, part=args.part)
    print(path)
    return 0


def run_export_xmem(args: argparse.Namespace) -> int:
    from models.repository import engine_dir
    from models.weights.fetch import resolve_weights

    if args.part != "full":
        raise ValueError("--part applies to rife 4.22+ only; xmem always exports its three engines")
    from models.xmem.loading import load_xmem_engines

    model = args.model or "xmem"
    if not model.startswith("xmem"):
        raise ValueError(f"export xmem takes --model xmem or xmem-s012, not {model}")
    weights = resolve_weights(model, args.weights)
    repository = args.repository or default_repository()
    load_xmem_engines(model, weights, args.format, fp16=args.fp16, repository=repository)
    print(engine_dir(repository, model, args.format, args.fp16))
    return 0


def run_export_videomae(args: argparse.Namespace) -> int:
    """Both parts (embed, encode) of the clip encoder into the repository."""
    from models.repository import engine_dir
    from models.videomae.loading import load_videomae_engines
    from models.weights.fetch import resolve_weights

    if args.model is None or not args.model.startswith("videomae-") or args.part != "full":
        raise ValueError(
            "export videomae takes --model videomae-vit-s-k400 or videomae-vit-b-k400, and no --part"
        )
    repository = args.repository or default_repository()
    weights = resolve_weights(args.model, args.weights)
    load_videomae_engines(args.model, weights, args.format, fp16=args.fp16, repository=repository)
    print(engine_dir(repository, args.model, args.format, args.fp16))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_interpolate(sub)
    segment_cli.add_parser(sub)
    embed_cli.add_parser(sub)
    fetch = sub.add_parser("fetch", help="download a model's weights into the cache and verify them")
    fetch.add_argument("name", help=f"registry name, e.g. {DEFAULT_MODEL}")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    torch.set_grad_enabled(False)
    try:
        if args.command == "fetch":
            return fetch_main(args.name, progress=not args.quiet)
        if args.command == "export":
            return run_export(args)
        if args.command == "segment":
            return segment_cli.run_segment(args)
        if args.command == "embed":
            return embed_cli.run_embed(args)
        return run_interpolate(args)
    except (
        FetchError,
        CheckpointError,
        ImageError,
        InterpolationInputError,
        SegmentationInputError,
        XMemConfigError,
        FileNotFoundError,
        KeyError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
