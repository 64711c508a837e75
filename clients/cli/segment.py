"""``python -m clients segment``: track objects through a video with a server's XMem session,
from an index mask on the first frame (and masks given or corrected on later frames), into
an overlay video or a folder of index PNGs plus COCO RLE JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clients.cli.common import (
    CliError,
    add_api_key,
    connect,
    delete_quietly,
    finish_progress,
    is_video_path,
    progress,
    wait_ready,
    warn_if_short,
)
from clients.cli.sinks import MaskFolder, MaskSink, OverlayVideo
from clients.python import FrameRejected, SegmentationStream
from models.images import ImageError, read_index_mask
from models.video import DecodedFrame, VideoInfo, probe, read_frames

DEFAULT_SIZE = 480  # XMem's evaluation size (the server's default too)


@dataclass(frozen=True)
class MaskAt:
    """An index mask given on one frame: ``N:FILE``."""

    index: int  # 0-based frame, in decode order
    path: Path  # index PNG (palette or greyscale) whose values are object ids

    @classmethod
    def parse(cls, text: str) -> MaskAt:
        index, sep, path = text.partition(":")
        if not sep or not index.isdigit() or not path:
            raise argparse.ArgumentTypeError(f"--mask-at takes N:FILE (frame index, index PNG), got {text!r}")
        return cls(int(index), Path(path))


def processing_size(text: str) -> int | None:
    """``--size``: the shorter side frames are processed at, or ``none`` for as given."""
    if text.lower() == "none":
        return None
    if not text.isdigit() or not 64 <= int(text) <= 2160:
        raise argparse.ArgumentTypeError(f"--size takes 64 to 2160 or 'none', got {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction, server: str) -> None:
    p = sub.add_parser(
        "segment",
        help="track masked objects through a video with XMem",
        description="Segment VIDEO from index masks: frame 0's (--mask) and any later ones (--mask-at).",
    )
    p.add_argument("video", type=Path, help="input video file")
    p.add_argument(
        "--mask",
        type=Path,
        metavar="FILE",
        help="index PNG for frame 0: pixel values are object ids, 0 background",
    )
    p.add_argument(
        "--mask-at",
        type=MaskAt.parse,
        action="append",
        default=[],
        metavar="N:FILE",
        help="index PNG for frame N: adds its objects or corrects theirs (repeat for several)",
    )
    p.add_argument(
        "--objects",
        type=int,
        nargs="+",
        metavar="ID",
        help="track only these ids (default: every id in the masks)",
    )
    p.add_argument(
        "--size",
        type=processing_size,
        default=DEFAULT_SIZE,
        metavar="PIXELS",
        help=f"frames' shorter side on the server, or 'none' (default {DEFAULT_SIZE}, never upscaled)",
    )
    p.add_argument("--model", help="an XMem model the server serves (default: its first)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="overlay video (.mp4, .mkv, .mov, .webm), or a folder for masks",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--crf", type=int, default=18, help="encoder quality, lower is better (default 18)")
    p.add_argument("--no-audio", action="store_true", help="leave the input's audio out of an overlay video")
    p.add_argument("--server", default=server, help=f"server URL (default $VIDSERVE_URL or {server})")
    add_api_key(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = probe(args.video)
    masks = load_masks(args, info)
    objects = sorted({int(i) for mask in masks.values() for i in np.unique(mask) if i})
    with connect(args.server, args.api_key) as client:
        wait_ready(client, args.server)
        session = client.create_segmentation_session(
            model=args.model, processing_size=_size(args.size, info), max_objects=len(objects)
        )
        try:
            reader = read_frames(args.video)
            with (
                _sink(args, info, objects) as sink,
                progress(info.frames, desc="segment", quiet=args.quiet) as bar,
                session.stream() as stream,
            ):
                count = _segment(stream, reader, masks, sink, bar)
                finish_progress(bar)
        finally:
            delete_quietly(session)
    warn_if_short(reader, info)
    unused = sorted(i for i in masks if i >= count)
    if unused:
        print(
            f"warning: masks for frames {unused} were not used: the video has {count} frames", file=sys.stderr
        )
    return 0


def _size(size: int | None, info: VideoInfo) -> int | None:
    """The default size only shrinks: a video already smaller is processed as it is."""
    if size == DEFAULT_SIZE and min(info.width, info.height) <= DEFAULT_SIZE:
        return None
    return size


def load_masks(args: argparse.Namespace, info: VideoInfo) -> dict[int, np.ndarray]:
    """Frame index → uint8 H×W ids, restricted to ``--objects``; every mask checked against the
    video's size and for at least one object."""
    given = ([MaskAt(0, args.mask)] if args.mask else []) + list(args.mask_at)
    if not given:
        raise CliError("give the first frame's objects: --mask FILE.png (or --mask-at N:FILE.png)")
    masks = {item.index: _read_mask(item.path, info, args.objects) for item in given}
    present = {int(i) for mask in masks.values() for i in np.unique(mask)}
    missing = sorted(set(args.objects or []) - present)
    if missing:
        raise CliError(f"--objects {missing}: in none of the masks")
    return masks


def _read_mask(path: Path, info: VideoInfo, objects: list[int] | None) -> np.ndarray:
    if not path.is_file():
        raise CliError(f"{path}: no such mask file")
    try:
        mask = read_index_mask(path)  # uint8 H×W ids
    except ImageError as exc:
        raise CliError(str(exc)) from None
    if mask.shape != (info.height, info.width):
        raise CliError(
            f"{path}: the mask is {mask.shape[1]}×{mask.shape[0]} but the video is {info.width}×{info.height}"
        )
    if objects is not None:
        mask = np.where(np.isin(mask, objects), mask, 0).astype(np.uint8)
    if not mask.any():
        chosen = "" if objects is None else f" among --objects {objects}"
        raise CliError(f"{path}: no object{chosen}: every pixel is 0 (background)")
    return mask


def _sink(args: argparse.Namespace, info: VideoInfo, objects: list[int]) -> MaskSink:
    if is_video_path(args.out):
        audio = args.video if info.has_audio and not args.no_audio else None
        return OverlayVideo(args.out, info, audio_from=audio, alpha=args.alpha, crf=args.crf)
    if args.out.suffix:
        raise CliError(f"--out {args.out}: a video ends in .mp4, .mkv, .mov or .webm; a folder has no suffix")
    return MaskFolder(args.out, info, video=args.video, objects=objects)


def _segment(
    stream: SegmentationStream,
    frames: Iterable[DecodedFrame],
    masks: dict[int, np.ndarray],
    sink: MaskSink,
    bar: tqdm,
) -> int:
    """Each frame to the server (with its mask, if given) and its mask to ``sink``; frames
    before the first mask have nothing to track and get an empty mask without a request.
    Returns the number of frames."""
    first = min(masks)
    count = 0
    for frame in frames:
        if frame.index < first:
            sink.write(frame, np.zeros(frame.rgb.shape[:2], np.uint8), [])
        else:
            mask, tracked = _send(stream, frame, masks.get(frame.index))
            sink.write(frame, mask, tracked)
        count += 1
        bar.update(1)
    return count


def _send(
    stream: SegmentationStream, frame: DecodedFrame, mask: np.ndarray | None
) -> tuple[np.ndarray, list[int]]:
    """One frame's mask (uint8 H×W ids) and tracked ids; ``mask`` sets the objects in it."""
    objects = [int(i) for i in np.unique(mask) if i] if mask is not None else None
    try:
        result = stream.send(frame.rgb, mask=mask, objects=objects, pts=frame.time_s)
    except FrameRejected as exc:
        raise CliError(f"frame {frame.index}: the server refused it: {exc.code}: {exc.message}") from None
    if result.mask is None:
        raise CliError(f"frame {frame.index}: the server sent no index mask")
    return result.mask, result.tracked
