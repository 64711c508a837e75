"""``python -m clients interpolate``: a video at N× its frame rate, through a server's RIFE
session. Originals are kept, the in-betweens go at their timestep between their two sources'
times, and the audio is copied unchanged."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from clients.cli.common import (
    CliError,
    add_api_key,
    codec_for,
    connect,
    delete_quietly,
    is_video_path,
    progress,
    wait_ready,
)
from clients.python import FrameRejected, InterpolationStream
from models.rife.spec import SCALES
from models.video import DecodedFrame, VideoInfo, VideoWriter, clock_for, probe, read_frames


def add_parser(sub: argparse._SubParsersAction, server: str) -> None:
    p = sub.add_parser(
        "interpolate",
        help="raise a video's frame rate N× with RIFE",
        description="Write VIDEO at N× its frame rate: originals plus RIFE in-betweens, audio copied.",
    )
    p.add_argument("video", type=Path, help="input video file")
    p.add_argument(
        "--factor", type=int, default=2, metavar="N", help="N: output frame rate = N × input (default 2)"
    )
    p.add_argument("--scale", type=float, default=1.0, choices=SCALES, help="flow scale; 0.5 for 4K")
    p.add_argument("--model", help="a RIFE model the server serves (default: its first)")
    p.add_argument(
        "--scene-change-threshold",
        type=float,
        metavar="SSIM",
        default=0.2,
        help="thumbnail SSIM under which a pair is a cut and the earlier frame is held (0: never)",
    )
    p.add_argument("--out", type=Path, required=True, help="output video (.mp4, .mkv, .mov, .webm)")
    p.add_argument("--crf", type=int, default=18, help="encoder quality, lower is better (default 18)")
    p.add_argument("--no-audio", action="store_true", help="leave the input's audio out")
    p.add_argument("--server", default=server, help=f"server URL (default $VIDSERVE_URL or {server})")
    add_api_key(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not is_video_path(args.out):
        raise CliError(f"--out {args.out}: give a video file name ending in .mp4, .mkv, .mov or .webm")
    if not 2 <= args.factor <= 64:
        raise CliError(f"--factor {args.factor}: must be 2 to 64")
    info = probe(args.video)
    fps = info.fps * args.factor
    with connect(args.server, args.api_key) as client:
        wait_ready(client, args.server)
        session = client.create_interpolation_session(
            factor=args.factor,
            scale=args.scale,
            model=args.model,
            scene_change_threshold=args.scene_change_threshold or None,  # 0: never a cut
        )
        try:
            with (
                _writer(args, info, fps) as writer,
                progress(info.frames, desc="interpolate", quiet=args.quiet) as bar,
                session.stream() as stream,
            ):
                last = _interpolate(stream, read_frames(args.video), writer, bar)
                _hold_last(writer, last, args.factor, fps)
        finally:
            delete_quietly(session)
    return 0


def _writer(args: argparse.Namespace, info: VideoInfo, fps: Fraction) -> VideoWriter:
    return VideoWriter(
        args.out,
        width=info.width,
        height=info.height,
        fps=fps,
        # why the source clock over N: every in-between of a pair lands on a whole tick
        time_base=clock_for(fps, info.time_base / args.factor),
        audio_from=args.video if info.has_audio and not args.no_audio else None,
        codec=codec_for(args.out),
        crf=args.crf,
    )


def _interpolate(
    stream: InterpolationStream, frames: Iterable[DecodedFrame], writer: VideoWriter, bar: tqdm
) -> DecodedFrame | None:
    """Send each frame; write its pair's in-betweens, then the frame. Returns the last frame."""
    previous: DecodedFrame | None = None
    for frame in frames:
        try:
            result = stream.send(frame.rgb, pts=frame.time_s)
        except FrameRejected as exc:
            raise CliError(f"frame {frame.index}: the server refused it: {exc}") from None
        if previous is not None:
            span = frame.time_s - previous.time_s
            for between in result.frames:
                # why the local frame at a cut: the server's copy of it, but never re-encoded
                rgb = previous.rgb if between.scene_change else between.frame
                writer.write(rgb, previous.time_s + between.timestep * span)
        writer.write(frame.rgb, frame.time_s)
        previous = frame
        bar.update(1)
    return previous


def _hold_last(writer: VideoWriter, last: DecodedFrame | None, factor: int, fps: Fraction) -> None:
    """Repeat the last frame over its own N−1 slots: the output keeps the input's duration
    (and its audio's) and has exactly N× its frames."""
    if last is None:
        raise CliError("the video has no frames")
    for step in range(1, factor):
        writer.write(last.rgb, last.time_s + float(step / fps))
