"""``python -m clients interpolate``: a video at N× its frame rate, or at a given frame rate,
through a server's RIFE session, with the audio copied unchanged.

``--factor N`` keeps the originals at their own times and puts N-1 in-betweens at i/N of each
pair. ``--fps R`` writes constant frame rate output: each output frame sits at its instant
k/R and is interpolated at its own timestep between the two source frames around it, so
24→60 and variable-rate sources work; repeated source frames are dropped first (``--dedup``,
on by default with ``--fps``). ``--start``/``--end`` trim the clip, audio included."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from clients.cli.common import (
    CliError,
    add_api_key,
    add_trim,
    codec_for,
    connect,
    delete_quietly,
    finish_progress,
    is_video_path,
    parse_rate,
    progress,
    trim_of,
    wait_ready,
    warn_if_short,
)
from clients.python import FrameRejected, InterpolationStream
from models.rife.spec import SCALES
from models.timeline import DEDUP_HI, Deduplicator, FactorTimeline, RateTimeline, Timeline
from models.video import (
    DecodedFrame,
    FrameReader,
    Trim,
    VideoInfo,
    VideoWriter,
    clock_for,
    probe,
    read_frames,
)

MAX_FPS = Fraction(1000)  # why: past this no player shows the frames; a typo (600 for 60) is caught


def add_parser(sub: argparse._SubParsersAction, server: str) -> None:
    p = sub.add_parser(
        "interpolate",
        help="raise a video's frame rate N× or to a given rate with RIFE",
        description="Write VIDEO at N× its frame rate (--factor) or at a constant rate (--fps): "
        "originals plus RIFE in-betweens, audio copied.",
    )
    p.add_argument("video", type=Path, help="input video file")
    p.add_argument(
        "--factor", type=int, default=2, metavar="N", help="N: output frame rate = N × input (default 2)"
    )
    p.add_argument(
        "--fps",
        type=parse_rate,
        metavar="RATE",
        help="constant output frame rate instead of --factor: 60, 59.94 or 60000/1001",
    )
    dedup = p.add_mutually_exclusive_group()
    dedup.add_argument(
        "--dedup",
        action="store_true",
        default=None,
        help="drop source frames that repeat the previous one before interpolating (default with --fps)",
    )
    dedup.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep repeated frames")
    p.add_argument(
        "--dedup-threshold",
        type=float,
        default=DEDUP_HI,
        metavar="LEVELS",
        help=f"mean luma levels (0-255) an 8×8 block of a repeat may differ by (default {DEDUP_HI:g})",
    )
    add_trim(p)
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


@dataclass(frozen=True)
class Plan:
    """How the output is timed."""

    fps: Fraction  # the output's frame rate
    per_pair: bool  # True: each frame sends its own timesteps (a target rate); False: the session's
    dedup: Deduplicator | None  # drops repeated source frames, when asked
    trim: Trim  # the part of the input read

    def timeline(self, info: VideoInfo, factor: int) -> Timeline:
        if self.per_pair:
            return RateTimeline(self.fps, origin=self.trim.start_s)
        return FactorTimeline(factor, info.fps, origin=self.trim.start_s)


def plan_for(args: argparse.Namespace, info: VideoInfo) -> Plan:
    """``--dedup`` alone keeps N× the rate but needs a regular timeline, so it retimes too."""
    if args.fps is not None and not 0 < args.fps <= MAX_FPS:
        raise CliError(f"--fps {args.fps}: must be above 0 and at most {MAX_FPS}")
    if not 0 <= args.dedup_threshold <= 255:
        raise CliError(f"--dedup-threshold {args.dedup_threshold}: must be 0 to 255")
    dedup = args.fps is not None if args.dedup is None else args.dedup
    fps = args.fps if args.fps is not None else info.fps * args.factor
    per_pair = args.fps is not None or dedup
    deduplicator = Deduplicator(hi=args.dedup_threshold) if dedup else None
    return Plan(fps, per_pair, deduplicator, trim_of(args))


def run(args: argparse.Namespace) -> int:
    if not is_video_path(args.out):
        raise CliError(f"--out {args.out}: give a video file name ending in .mp4, .mkv, .mov or .webm")
    if not 2 <= args.factor <= 64:
        raise CliError(f"--factor {args.factor}: must be 2 to 64")
    info = probe(args.video)
    plan = plan_for(args, info)
    with connect(args.server, args.api_key) as client:
        wait_ready(client, args.server)
        session = client.create_interpolation_session(
            factor=args.factor,
            scale=args.scale,
            model=args.model,
            scene_change_threshold=args.scene_change_threshold or None,  # 0: never a cut
        )
        try:
            reader = read_frames(args.video, plan.trim)
            with (
                _writer(args, info, plan) as writer,
                progress(_expected(info, plan.trim), desc="interpolate", quiet=args.quiet) as bar,
                session.stream() as stream,
            ):
                retimer = _Retimer(stream, writer, plan.timeline(info, args.factor), plan)
                last = retimer.run(reader, bar)
                _hold_last(retimer, reader, last, info, plan.trim)
                finish_progress(bar)
        finally:
            delete_quietly(session)
    _report(args, reader, info, writer, plan)
    return 0


def _expected(info: VideoInfo, trim: Trim) -> int | None:
    """Frames to read, for the progress bar: the container's count, or the trimmed span's."""
    if trim.start_s == 0 and trim.end_s is None:
        return info.frames
    end = trim.end_s if trim.end_s is not None else info.duration_s
    return None if end is None else max(0, round((end - trim.start_s) * float(info.fps)))


def _writer(args: argparse.Namespace, info: VideoInfo, plan: Plan) -> VideoWriter:
    # why: at a target rate every frame is k/fps, a whole tick; with a factor, the source
    # clock over N puts every in-between of a pair on a whole tick
    steps = () if plan.per_pair else (info.time_base / args.factor,)
    return VideoWriter(
        args.out,
        width=info.width,
        height=info.height,
        fps=plan.fps,
        time_base=clock_for(plan.fps, *steps),
        audio_from=args.video if info.has_audio and not args.no_audio else None,
        audio_trim=plan.trim,
        codec=codec_for(args.out),
        crf=args.crf,
    )


class _Retimer:
    """Source frames to the server and the output frames to the writer, as the timeline says."""

    def __init__(
        self, stream: InterpolationStream, writer: VideoWriter, timeline: Timeline, plan: Plan
    ) -> None:
        self.stream, self.writer, self.timeline, self.plan = stream, writer, timeline, plan

    def run(self, frames: Iterable[DecodedFrame], bar: tqdm) -> DecodedFrame | None:
        """Send each kept frame; write its pair's in-betweens, then the frame wherever the
        timeline shows it. Returns the last frame sent."""
        previous: DecodedFrame | None = None
        for frame in frames:
            bar.update(1)
            is_repeat = self.plan.dedup is not None and self.plan.dedup.is_repeat(frame.rgb)
            if is_repeat:
                continue
            self._send(previous, frame)
            previous = frame
        return previous

    def _send(self, previous: DecodedFrame | None, frame: DecodedFrame) -> None:
        pair = self.timeline.pair(previous.time_s if previous else None, frame.time_s)
        timesteps = pair.timesteps if self.plan.per_pair else None
        try:
            result = self.stream.send(frame.rgb, pts=frame.time_s, timesteps=timesteps)
        except FrameRejected as exc:
            raise CliError(f"frame {frame.index}: the server refused it: {exc}") from None
        for between, time_s in zip(result.frames, pair.between_s, strict=True):
            # why the local frame at a cut: the server's copy of it, but never re-encoded
            assert previous is not None
            self.writer.write(previous.rgb if between.scene_change else between.frame, time_s)
        for time_s in pair.this_s:
            self.writer.write(frame.rgb, time_s)


def _hold_last(
    retimer: _Retimer, reader: FrameReader, last: DecodedFrame | None, info: VideoInfo, trim: Trim
) -> None:
    """The last frame over the rest of its own time: the output keeps the input's duration
    (and its audio's); with a factor, exactly N× the frames."""
    if last is None:
        where = " in the trimmed part" if trim.start_s or trim.end_s is not None else ""
        raise CliError(f"the video has no frames{where}")
    end = reader.end_s if reader.end_s is not None else last.time_s + float(1 / info.fps)
    if trim.end_s is not None:
        end = min(end, trim.end_s)
    for time_s in retimer.timeline.tail(last.time_s, end):
        retimer.writer.write(last.rgb, time_s)


def _report(
    args: argparse.Namespace, reader: FrameReader, info: VideoInfo, writer: VideoWriter, plan: Plan
) -> None:
    """A short input warns on stderr, whatever --quiet says; the summary follows unless quiet."""
    warn_if_short(reader, info)
    if args.quiet:
        return
    dropped = f", {plan.dedup.dropped} repeated source frames dropped" if plan.dedup else ""
    print(
        f"wrote {args.out}: {writer.frames} frames at {float(plan.fps):g} fps from {reader.frames} "
        f"source frames{dropped}",
        file=sys.stderr,
    )
