"""``python -m models embed``: the clip encoder (VideoMAE V2) over a folder of frames, with
no server: the clip's embedding, its Kinetics-400 logits, and its top labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from models.images import read_rgb
from models.runtime import ENGINE_KINDS
from models.segment_cli import list_frames
from models.videomae.config import ARCHS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed and classify a clip (a folder of frames) with VideoMAE V2")
    p.add_argument("frames", type=Path, help="folder of the clip's frames, read in name order")
    p.add_argument("--arch", required=True, choices=list(ARCHS), help="the checkpoint's architecture")
    p.add_argument(
        "--weights", type=Path, required=True, help="a released checkpoint: .pth or model.safetensors"
    )
    p.add_argument(
        "--classes", type=int, default=400, help="classes of the output (a 710-class head gives 400)"
    )
    p.add_argument(
        "--size", type=int, default=224, help="frame side the encoder sees (the checkpoints': 224)"
    )
    p.add_argument("--keep", type=Path, help=".npy of the token indices to run (default: every token)")
    p.add_argument("--engine", choices=ENGINE_KINDS, default="eager")
    p.add_argument("--top-k", type=int, default=5, help="labels written to labels.json")
    p.add_argument(
        "--out", type=Path, required=True, help="folder for embedding.npy, logits.npy, labels.json"
    )
    p.add_argument(
        "--raw", action="store_true", help="also write hidden.npy: the last block's tokens (eager)"
    )


def read_clip(folder: Path, size: int) -> np.ndarray:
    """The folder's frames, fitted to ``size`` → uint8 T×size×size×3."""
    from models.videomae.frames import fit

    frames = [fit(read_rgb(path), size) for path in list_frames(folder)]
    return np.stack(frames)


def read_keep(path: Path | None, tokens: int) -> torch.Tensor | None:
    if path is None:
        return None
    keep = np.load(path)
    if keep.ndim != 1 or keep.dtype.kind not in "iu" or keep.size == 0:
        raise ValueError(f"{path}: --keep must be a 1-D .npy of token indices, got {keep.dtype} {keep.shape}")
    if keep.min() < 0 or keep.max() >= tokens or len(np.unique(keep)) != keep.size:
        raise ValueError(f"{path}: token indices must be distinct and in 0..{tokens - 1}")
    return torch.from_numpy(keep.astype(np.int64))


def run_embed(args: argparse.Namespace) -> int:
    from models.videomae.checkpoint import load_videomae
    from models.videomae.export import eager_engines
    from models.videomae.labels import label_of
    from models.videomae.loading import load_videomae_engines
    from models.videomae.network import check_clip, select, tokens_of

    net = load_videomae(args.weights, args.classes)
    if net.config.arch != args.arch:
        raise ValueError(f"{args.weights} holds VideoMAE {net.config.arch}, not {args.arch}")
    clip = read_clip(args.frames, args.size)
    check_clip(net.config, *clip.shape[:3])
    tokens = tokens_of(net.config, *clip.shape[:3])
    keep = read_keep(args.keep, tokens)
    engines = (
        eager_engines(net)
        if args.engine == "eager"
        else load_videomae_engines(
            f"videomae-{args.arch}-k400", args.weights, args.engine, classes=args.classes
        )
    )
    frames = torch.from_numpy(clip)[None]  # 1×T×H×W×3
    embedded, positions = engines.embed(frames)
    if keep is not None:
        embedded, positions = select(embedded, positions, keep)
    embedding, logits = (t.float().cpu() for t in engines.encode(embedded, positions))
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "embedding.npy", embedding[0].numpy())
    np.save(args.out / "logits.npy", logits[0].numpy())
    if args.raw:
        with torch.inference_mode():
            np.save(args.out / "hidden.npy", net.hidden(embedded, positions)[0].numpy())
    scores = torch.softmax(logits[0], 0)
    top = scores.topk(min(args.top_k, scores.numel()))
    labels = [
        {"label": label_of(int(i), net.config.classes), "index": int(i), "score": round(float(s), 6)}
        for s, i in zip(top.values, top.indices, strict=True)
    ]
    summary = {
        "arch": net.config.arch,
        "frames": int(clip.shape[0]),
        "tokens": tokens,
        "kept": int(embedded.shape[1]),
    }
    (args.out / "labels.json").write_text(json.dumps({**summary, "labels": labels}, indent=2) + "\n")
    for entry in labels:
        print(f"{entry['score']:.4f}  {entry['label']}")
    return 0
