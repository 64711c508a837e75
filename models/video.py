"""Video files with PyAV: probe, decode to RGB, encode with timestamps kept and audio copied,
and draw masks over frames. Shared by the command-line client and the server's clip jobs, so
it needs only av, numpy and the standard library."""

from __future__ import annotations

import collections
import contextlib
import heapq
import math
import os
import secrets
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import numpy as np
from av.container import InputContainer, OutputContainer

from models.images import voc_palette

# why 90 kHz: MPEG's clock; every common frame rate (24, 25, 30000/1001, 50, 60...) is a whole
# number of its ticks, so a variable-rate source's timestamps survive at sub-millisecond precision
DEFAULT_CLOCK = Fraction(1, 90000)
# why a cap: MP4 stores the timescale as 32 bits; a finer clock than this gains nothing audible
MAX_CLOCK_RATE = 2**31 - 1

# Encoder options per codec when the caller gives none: CRF quality, sensible speed.
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "medium"},
    "libvpx-vp9": {"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
}


class VideoError(ValueError):
    """A file that is missing, not a video, or that cannot be decoded or written."""


class AudioCopyError(VideoError):
    """The output's container cannot hold the source's audio codec unchanged."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about its first video stream."""

    width: int  # pixels
    height: int  # pixels
    fps: Fraction  # average frame rate (frames over duration), the guessed rate when unknown
    time_base: Fraction  # seconds per pts tick of the video stream
    frames: int | None  # frame count from the container's index; None when it does not say
    duration_s: float | None  # the video stream's duration (else the container's); None if unknown
    has_audio: bool  # the file has at least one audio stream


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame, in presentation order."""

    index: int  # 0-based position in decode output
    pts: int | None  # presentation timestamp in the stream's time_base; None when the file has none
    time_s: float  # pts in seconds, or index / fps when pts is missing
    rgb: np.ndarray  # uint8 H×W×3


def _open(path: Path) -> InputContainer:
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file")
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from exc


def _video_stream(container: InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise VideoError(f"{path}: the file has no video stream")
    return container.streams.video[0]


def _frame_rate(stream: av.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise VideoError("the video stream has no frame rate")


def _refuse_still(container: InputContainer, path: Path) -> None:
    """FFmpeg reads a PNG or JPEG as a one-frame video; whatever its name, it is no clip."""
    kind = container.format.name
    if kind == "image2" or kind.endswith("_pipe"):
        image = kind.removesuffix("_pipe").upper() if kind != "image2" else "still"
        raise VideoError(f"{path}: is a {image} image, not a video (whatever its file name says)")


def probe(path: Path) -> VideoInfo:
    """The first video stream's size, rate, clock and length, and whether there is audio.
    Still images are refused."""
    with _open(path) as container:
        _refuse_still(container, path)
        stream = _video_stream(container, path)
        time_base = Fraction(stream.time_base or DEFAULT_CLOCK)
        duration_s = None
        if stream.duration:
            duration_s = float(stream.duration * time_base)
        elif container.duration:
            duration_s = container.duration / av.time_base
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=_frame_rate(stream),
            time_base=time_base,
            frames=stream.frames or None,
            duration_s=duration_s,
            has_audio=bool(container.streams.audio),
        )


@dataclass(frozen=True)
class Trim:
    """The part of a video to read, in seconds of its timeline: frames at ``start_s`` ≤ t <
    ``end_s``. Frames keep their source times; what is written from them starts at 0 (as
    ``ffmpeg -ss`` output does), audio included."""

    start_s: float = 0.0  # first instant kept
    end_s: float | None = None  # first instant left out; None: the end of the video

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise VideoError(f"start must be a time in seconds ≥ 0, got {self.start_s}")
        if self.end_s is not None and not (math.isfinite(self.end_s) and self.end_s > self.start_s):
            raise VideoError(f"end ({self.end_s} s) must come after start ({self.start_s} s)")

    def keeps(self, time_s: float) -> bool:
        return time_s >= self.start_s - TIME_TOLERANCE_S and (
            self.end_s is None or time_s < self.end_s - TIME_TOLERANCE_S
        )

    def is_past(self, time_s: float) -> bool:
        return self.end_s is not None and time_s >= self.end_s - TIME_TOLERANCE_S


WHOLE = Trim()
# why: two instants closer than this are one frame's: AVI writes 15 fps as ticks of 66667 µs,
# so tree.avi's frame 11 sits 3.7 µs off 11/15 s; a tenth of a frame at 1000 fps is still apart
TIME_TOLERANCE_S = 1e-4
# why 4: the frames a decoder may hand out before one whose timestamp belongs earlier. Packed
# B-frames in AVI (MPEG-4 Part 2, as DivX/Xvid write it) swap neighbours; 4 covers the
# longest B-frame runs those encoders make, at the cost of 4 decoded frames held
REORDER_DEPTH = 4
# why: the decoded part may end this much before what the container announced and still be
# whole (a last frame's duration, audio-led container durations, rounding)
SHORTFALL_FRAMES = 2


class FrameReader:
    """Decode the first video stream to RGB frames, in display order, within ``trim``; an
    iterator of ``DecodedFrame`` that closes the file when exhausted or closed. A decoding
    error mid-file raises VideoError.

    Pictures come out of the decoder in display order, but some demuxers attach their
    timestamps in decode order (AVI has no presentation times: packed B-frames come out as
    0.125, 0.209, 0.167, ... s). So each picture gets the earliest timestamp not yet given,
    among the next ``REORDER_DEPTH`` frames: in-order streams keep theirs unchanged.

    After the last frame, ``frames`` and ``end_s`` say how much was decoded, and
    ``shortfall`` whether that is less than the container announced (a cut file decodes
    without error, just short).
    """

    def __init__(self, path: Path, trim: Trim = WHOLE) -> None:
        self.path, self.trim = Path(path), trim
        self.frames = 0  # frames yielded so far
        self.end_s: float | None = None  # end of the last packet read: its time plus duration
        self._container = _open(self.path)
        self._frames = self._decode()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> DecodedFrame:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()
        self._container.close()

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        try:
            _refuse_still(self._container, self.path)
            stream = _video_stream(self._container, self.path)
            stream.thread_type = "AUTO"  # why: frame threads; decoding is most of a reader's time
            fps = _frame_rate(stream)
            clock = Fraction(stream.time_base or DEFAULT_CLOCK)
            self._seek(stream)
            for picture, pts in self._in_display_order(stream):
                time_s = float(pts * clock) if pts is not None else float(self.frames / fps)
                if self.trim.is_past(time_s):
                    break
                if not self.trim.keeps(time_s):
                    continue
                rgb = picture.to_ndarray(format="rgb24")  # uint8 H×W×3
                yield DecodedFrame(index=self.frames, pts=pts, time_s=time_s, rgb=rgb)
                self.frames += 1
        except av.FFmpegError as exc:
            raise VideoError(f"{self.path}: cannot decode ({exc})") from exc
        finally:
            self._container.close()

    def _seek(self, stream: av.VideoStream) -> None:
        """Start at the keyframe before ``trim.start_s``; from the top when the file cannot seek."""
        if self.trim.start_s <= 0 or not stream.time_base:
            return
        try:
            self._container.seek(int(self.trim.start_s / stream.time_base), stream=stream, backward=True)
        except av.FFmpegError:
            self._container.seek(0, stream=stream, backward=True)

    def _in_display_order(
        self, stream: av.VideoStream
    ) -> Generator[tuple[av.VideoFrame, int | None], None, None]:
        """Decoded pictures, each with the earliest pending timestamp (see the class)."""
        held: collections.deque[av.VideoFrame] = collections.deque()
        times: list[int] = []  # a heap of the held pictures' timestamps
        for packet in self._container.demux(stream):
            self._note_end(packet)
            for picture in packet.decode():
                if picture.pts is None:  # no timestamps at all: nothing to put in order
                    yield picture, None
                    continue
                held.append(picture)
                heapq.heappush(times, picture.pts)
                if len(held) > REORDER_DEPTH:
                    yield held.popleft(), heapq.heappop(times)
        while held:
            yield held.popleft(), heapq.heappop(times)

    def _note_end(self, packet: av.Packet) -> None:
        if packet.pts is None or not packet.size or packet.time_base is None:
            return
        end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
        self.end_s = max(end, self.end_s or 0.0)

    def shortfall(self, info: VideoInfo) -> str | None:
        """Why the decoded part is shorter than announced, in one line; None when it is not.
        Call once the frames are exhausted."""
        announced = info.duration_s
        if self.trim.end_s is not None:
            announced = min(announced or math.inf, self.trim.end_s)
        if announced is None or math.isinf(announced) or self.end_s is None:
            return None
        slack = SHORTFALL_FRAMES / float(info.fps)
        if self.end_s >= announced - slack:
            return None
        counted = f" of the {info.frames} it announces" if info.frames and self.trim == WHOLE else ""
        return (
            f"{self.path.name}: decoded {self.frames} frames{counted}: decoding stopped at "
            f"{self.end_s:.3f} s of {announced:.3f} s (the file is cut short or damaged); "
            "the output covers only the decoded part"
        )


def read_frames(path: Path, trim: Trim = WHOLE) -> FrameReader:
    """Decode the first video stream to RGB frames in display order (see ``FrameReader``)."""
    return FrameReader(path, trim)


def clock_for(fps: Fraction, *steps: Fraction) -> Fraction:
    """The coarsest time base in which one frame at ``fps`` and each of ``steps`` (seconds, e.g.
    a source's time base) are whole ticks, so those timestamps are written exactly; the 90 kHz
    clock (with ``fps`` if that fits, else alone) when that would exceed what MP4 can store
    (cup.mp4's 26777/1000 fps with 90 kHz is 2.4 GHz)."""
    for rate in (
        math.lcm(fps.numerator, *(Fraction(step).denominator for step in steps)),
        math.lcm(fps.numerator, DEFAULT_CLOCK.denominator),
    ):
        if rate <= MAX_CLOCK_RATE:
            return Fraction(1, rate)
    return DEFAULT_CLOCK


class _AudioCopy:
    """Audio packets of another file within ``trim``, muxed unchanged (only their times
    shifted by the trim's start) into an output as its video advances (interleaved by time,
    so the output never buffers a whole track)."""

    def __init__(self, source: Path, output: OutputContainer, trim: Trim) -> None:
        self.container = _open(source)
        if not self.container.streams.audio:
            self.container.close()
            raise VideoError(f"{source}: no audio stream to copy")
        template = self.container.streams.audio[0]
        try:
            self.stream = output.add_stream_from_template(template)
        except (av.FFmpegError, ValueError) as exc:
            self.container.close()
            codec = template.codec_context.name
            raise AudioCopyError(
                f"cannot copy the {codec} audio unchanged into this kind of file ({exc}); "
                "write a .mkv, which takes any codec, or leave the audio out"
            ) from exc
        self.time_base = Fraction(template.time_base or DEFAULT_CLOCK)
        self.trim = trim
        self.shift = round(Fraction(trim.start_s) / self.time_base)  # ticks of the trim's start
        if trim.start_s > 0:
            with contextlib.suppress(av.FFmpegError):  # why: unseekable files are read from the top
                self.container.seek(self.shift, stream=template, backward=True)
        self.packets = (p for p in self.container.demux(template) if self._keeps(p))
        self.pending: av.Packet | None = next(self.packets, None)

    def _keeps(self, packet: av.Packet) -> bool:
        """A packet with data, at or after the trim's start (its end stops ``mux_until``)."""
        if not packet.size or packet.pts is None:
            return False
        # why no bound at 0: AAC's first packet starts before 0 (its encoder delay)
        return self.trim.start_s <= 0 or self._time_s(packet.pts) >= self.trim.start_s - TIME_TOLERANCE_S

    def _time_s(self, pts: int) -> float:
        return float(pts * self.time_base)

    def mux_until(self, output: OutputContainer, time_s: float) -> None:
        """Mux every packet that starts at or before ``time_s`` seconds of the output (all:
        ``math.inf``), up to the trim's end."""
        while self.pending is not None and self._time_s(self.pending.pts or 0) - self.trim.start_s <= time_s:
            packet = self.pending
            if self.trim.is_past(self._time_s(packet.pts or 0)):
                self.pending = None
                break
            packet.stream = self.stream
            packet.pts = (packet.pts or 0) - self.shift
            if packet.dts is not None:
                packet.dts -= self.shift
            output.mux(packet)
            self.pending = next(self.packets, None)

    def close(self) -> None:
        self.container.close()


class VideoWriter:
    """Encode RGB frames to ``out`` with their timestamps, optionally copying another file's
    audio packets unchanged (those within ``audio_trim``, shifted to start with it). Frames go
    to a temporary file beside ``out``, renamed onto it on a clean exit and deleted on any
    exception (KeyboardInterrupt included): ``out`` is either complete or untouched.

    yuv420p needs even sizes, so an odd width or height is padded by one row or column
    repeating the edge (``encoded_size`` says what was written); decoders then show that extra
    line. Timestamps are rounded to ``time_base`` (default: exact for ``fps`` and 90 kHz), and a
    frame never goes before the previous one: a repeated or backward time is moved one tick on.
    """

    def __init__(
        self,
        out: Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction | None = None,
        audio_from: Path | None = None,
        audio_trim: Trim = WHOLE,
        codec: str = "libx264",
        crf: int = 18,
        options: dict[str, str] | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise VideoError(f"a video needs a positive size, got {width}×{height}")
        self.out = Path(out)
        self.size = (height, width)  # what write() accepts
        self.encoded_size = (height + height % 2, width + width % 2)  # yuv420p: even sizes
        self.fps = Fraction(fps)
        self.time_base = time_base or clock_for(self.fps, DEFAULT_CLOCK)
        self.audio_from = audio_from
        self.audio_trim = audio_trim
        self.codec = codec
        self.options = {**CODEC_OPTIONS.get(codec, {}), "crf": str(crf), **(options or {})}
        self.frames = 0  # written so far
        self._last_pts: int | None = None
        self._temp: Path | None = None
        self._container: OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: _AudioCopy | None = None

    def __enter__(self) -> Self:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        # why the suffix last: FFmpeg picks the container format from the file name; why not
        # mkstemp: it makes the file 0600, and the renamed output should get the usual umask mode
        self._temp = self.out.parent / f".{self.out.stem}.{secrets.token_hex(4)}.partial{self.out.suffix}"
        try:
            self._open()
        except BaseException:
            self._abort()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self._abort()
            return
        try:
            self._finish()
        except BaseException:
            self._abort()
            raise

    def write(self, rgb: np.ndarray, time_s: float | None = None) -> None:
        """rgb: uint8 H×W×3 at ``time_s`` seconds (None: frame count / fps)."""
        if self._container is None or self._video is None:
            raise RuntimeError("VideoWriter.write outside its `with` block")
        if rgb.dtype != np.uint8 or rgb.shape != (*self.size, 3):
            raise VideoError(
                f"frames must be uint8 {self.size[0]}×{self.size[1]}×3, got {rgb.dtype} {rgb.shape}"
            )
        frame = av.VideoFrame.from_ndarray(self._padded(rgb), format="rgb24")
        frame.pts = self._pts(time_s)
        frame.time_base = self.time_base
        try:
            if self._audio is not None:
                self._audio.mux_until(self._container, float(frame.pts * self.time_base))
            self._container.mux(self._video.encode(frame))
        except av.FFmpegError as exc:
            raise VideoError(f"{self.out}: cannot write ({exc})") from exc
        self.frames += 1

    def _open(self) -> None:
        assert self._temp is not None
        try:
            container = av.open(str(self._temp), "w")
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(f"{self.out}: cannot write this kind of file ({exc})") from exc
        self._container = container
        try:
            stream = container.add_stream(self.codec, rate=self.fps, options=self.options)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(f"{self.out}: cannot encode {self.codec} ({exc})") from exc
        if not isinstance(stream, av.VideoStream):
            raise VideoError(f"{self.codec} is not a video codec")
        stream.height, stream.width = self.encoded_size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = self.time_base
        self._video = stream
        if self.audio_from is not None:
            self._audio = _AudioCopy(self.audio_from, container, self.audio_trim)

    def _pts(self, time_s: float | None) -> int:
        if time_s is None:
            pts = int(self.frames / self.fps / self.time_base)
        else:
            pts = round(time_s * self.time_base.denominator / self.time_base.numerator)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _padded(self, rgb: np.ndarray) -> np.ndarray:
        extra_rows, extra_cols = (e - s for e, s in zip(self.encoded_size, self.size, strict=True))
        if not extra_rows and not extra_cols:
            return rgb
        return np.pad(rgb, ((0, extra_rows), (0, extra_cols), (0, 0)), mode="edge")

    def _finish(self) -> None:
        assert self._container is not None and self._video is not None and self._temp is not None
        try:
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.mux_until(self._container, math.inf)
            self._close()
        except av.FFmpegError as exc:
            raise VideoError(f"{self.out}: cannot write ({exc})") from exc
        os.replace(self._temp, self.out)
        self._temp = None

    def _close(self) -> None:
        container, self._container = self._container, None
        audio, self._audio = self._audio, None
        try:
            if container is not None:
                container.close()
        finally:
            if audio is not None:
                audio.close()

    def _abort(self) -> None:
        # why suppress: the file is deleted either way; the caller's own error is what matters
        with contextlib.suppress(Exception):
            self._close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


# --- masks over frames -------------------------------------------------------------------


def palette() -> np.ndarray:
    """uint8 256×3: a colour per object id, the palette of index PNG masks (PASCAL VOC /
    DAVIS), so overlays match them."""
    return np.array(voc_palette(), np.uint8).reshape(256, 3)


_PALETTE = palette()


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """rgb: uint8 H×W×3, mask: uint8 H×W object ids → uint8 H×W×3 with each object blended
    with its colour at ``alpha`` and outlined in it; background (0) pixels are untouched."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} does not match frame {rgb.shape[:2]}")
    colours = _PALETTE[mask].astype(np.float32)  # H×W×3
    blended = rgb.astype(np.float32) * (1 - alpha) + colours * alpha
    inside = mask > 0
    out = np.where(inside[..., None], np.rint(blended), rgb).astype(np.uint8)
    edge = _edges(mask) & inside
    out[edge] = _PALETTE[mask[edge]]
    return out


def _edges(mask: np.ndarray) -> np.ndarray:
    """bool H×W: pixels whose right or lower neighbour (or left or upper) has another id."""
    edge = np.zeros(mask.shape, bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge
