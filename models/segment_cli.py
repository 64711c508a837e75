"""``python -m models segment``: XMem over a folder of frames, with no server."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.images import ImageError, read_index_mask, read_rgb, write_index_png
from models.runtime import ENGINE_KINDS
from models.xmem.config import XMemConfig

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Prompt:
    """A mask given on one frame: ``INDEX:MASK.png[:ID,ID...]``."""

    index: int
    mask: Path
    objects: tuple[int, ...] | None  # None: every id in the mask

    @classmethod
    def parse(cls, text: str) -> Prompt:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0].isdigit():
            raise argparse.ArgumentTypeError(f"--prompt takes INDEX:MASK.png[:ID,ID...], got {text!r}")
        objects = None
        if len(parts) == 3:
            try:
                objects = tuple(int(v) for v in parts[2].split(","))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"object ids must be integers in {text!r}") from exc
        return cls(int(parts[0]), Path(parts[1]), objects)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment a folder of frames with XMem")
    p.add_argument("frames", type=Path, help="folder of frames, read in name order")
    p.add_argument("--model", default="xmem", choices=["xmem", "xmem-s012"])
    p.add_argument("--weights", type=Path, help="a released XMem checkpoint, instead of the registry's")
    p.add_argument(
        "--prompt", type=Prompt.parse, action="append", required=True, help="INDEX:MASK.png[:ID,ID...]"
    )
    p.add_argument("--config", type=Path, help="JSON of memory settings (XMemConfig fields) to override")
    p.add_argument("--engine", choices=ENGINE_KINDS, default="eager")
    p.add_argument(
        "--processing-size",
        type=_side,
        help="resize frames so their shorter side is this (XMem's evaluation uses 480; the server's "
        "default), and bring the masks back to each frame's size; default: frames as given",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for one index PNG per frame")
    p.add_argument("--raw", action="store_true", help="also write (1+objects)×H×W float32 .npy probabilities")


def _side(text: str) -> int:
    side = int(text)
    if side < 16:  # why: XMem's coarsest feature map has a stride of 16
        raise argparse.ArgumentTypeError(f"--processing-size must be at least 16, got {side}")
    return side


def list_frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"frames folder not found: {folder}")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise ImageError(f"{folder}: no frames ({', '.join(FRAME_SUFFIXES)})")
    return frames


def read_config(path: Path | None) -> XMemConfig:
    if path is None:
        return XMemConfig()
    return XMemConfig.from_dict(json.loads(path.read_text()))


def run_segment(args: argparse.Namespace) -> int:
    from models.weights.fetch import resolve_weights
    from models.xmem.inference_core import InferenceCore
    from models.xmem.loading import load_xmem_engines

    frames = list_frames(args.frames)
    prompts = {p.index: p for p in args.prompt}
    beyond = [i for i in prompts if i >= len(frames)]
    if beyond:
        raise ImageError(f"prompts for frames {beyond}, but {args.frames} holds {len(frames)} frames")
    config = read_config(args.config)
    engines = load_xmem_engines(args.model, resolve_weights(args.model, args.weights), args.engine)
    core = InferenceCore(engines, config, args.processing_size)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(tqdm(frames, unit="frame", desc="segmenting")):
        prompt = prompts.get(index)
        frame = read_rgb(path)
        if prompt is None:
            result = core.step(frame)
        else:
            result = core.step(frame, read_index_mask(prompt.mask), objects=prompt.objects)
        write_index_png(args.out / f"{path.stem}.png", result.index_mask())
        if args.raw:
            np.save(args.out / f"{path.stem}.npy", result.prob.float().cpu().numpy())
    return 0
