"""models.video on real files made with PyAV: probe, decode, write with timestamps and
copied audio, atomic output, odd sizes, and the mask overlay."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from models.video import VideoError, VideoWriter, clock_for, overlay, palette, probe, read_frames

AUDIO_RATE = 16000


def pattern(index: int, height: int = 64, width: int = 96) -> np.ndarray:
    """uint8 H×W×3, a gradient that moves with ``index`` (frames differ, and compress well)."""
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack([(cols * 2 + index * 16) % 256, (rows * 3) % 256, np.full_like(rows, index * 20)], -1)
    return rgb.astype(np.uint8)


def make_video(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    fps: int = 25,
    audio: bool = True,
    times: Sequence[float] | None = None,
) -> None:
    """frames: uint8 H×W×3 each, encoded near-losslessly (x264 CRF 0) at ``fps`` (or at
    ``times`` seconds), with a mono AAC sine as long as the video when ``audio``."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000 * fps)
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            seconds = index / fps if times is None else times[index]
            frame.pts, frame.time_base = round(seconds * 1000 * fps), Fraction(1, 1000 * fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _write_sine(container, sound, seconds=len(frames) / fps)


def _write_sine(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    samples = np.sin(np.arange(int(seconds * AUDIO_RATE)) * 0.05).astype(np.float32) * 0.3
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def audio_packets(path: Path) -> list[tuple[float, bytes]]:
    """(start in seconds, payload) of every audio packet, in file order."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        time_base = Fraction(stream.time_base or 1)
        return [
            (float(p.pts * time_base), bytes(p))
            for p in container.demux(stream)
            if p.size and p.pts is not None
        ]


def close(a: np.ndarray, b: np.ndarray, tolerance: float = 3.0) -> bool:
    """Equal up to yuv420p's rounding (mean absolute difference, in 8-bit levels)."""
    return a.shape == b.shape and float(np.abs(a.astype(float) - b.astype(float)).mean()) < tolerance


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.mp4"
    make_video(path, [pattern(i) for i in range(10)])
    return path


def test_probe_and_read(source: Path) -> None:
    info = probe(source)
    assert (info.width, info.height, info.fps, info.frames, info.has_audio) == (96, 64, 25, 10, True)
    assert info.duration_s == pytest.approx(0.4, abs=0.01)
    frames = list(read_frames(source))
    assert [f.index for f in frames] == list(range(10))
    assert [f.time_s for f in frames] == pytest.approx([i / 25 for i in range(10)])
    assert all(f.pts is not None and float(f.pts * info.time_base) == f.time_s for f in frames)
    for index, frame in enumerate(frames):
        assert frame.rgb.dtype == np.uint8 and close(frame.rgb, pattern(index))


def open_handles(path: Path) -> int:
    """This process's file descriptors open on ``path`` (Linux's /proc)."""
    fds = Path("/proc/self/fd")
    target = str(path.resolve())
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == target)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counting open files needs Linux's /proc")
def test_read_frames_closes_early(source: Path) -> None:
    frames = read_frames(source)
    assert next(frames).index == 0
    assert open_handles(source) >= 1
    frames.close()  # the generator's finally closes the container; a second close is harmless
    assert open_handles(source) == 0
    with pytest.raises(StopIteration):
        next(frames)


def test_writer_keeps_timestamps_frames_and_audio(source: Path, tmp_path: Path) -> None:
    """Irregular times (a variable frame rate) come back as written, and the audio packets are
    the source's bytes at the source's times."""
    info = probe(source)
    times = [0.0, 0.04, 0.1, 0.12, 0.2, 0.24, 0.28, 0.3, 0.36, 0.39]
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=96, height=64, fps=info.fps, audio_from=source, crf=0) as writer:
        for frame, time_s in zip(read_frames(source), times, strict=True):
            writer.write(frame.rgb, time_s)
    assert writer.frames == 10
    written = probe(out)
    assert (written.width, written.height, written.frames, written.has_audio) == (96, 64, 10, True)
    back = list(read_frames(out))
    assert [f.time_s for f in back] == pytest.approx(times, abs=1e-4)
    assert all(close(f.rgb, pattern(i)) for i, f in enumerate(back))
    assert audio_packets(source), "the test clip has no audio to copy"
    assert audio_packets(out) == audio_packets(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "source.mp4"]


def test_writer_default_times_follow_fps(tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    fps = Fraction(30000, 1001)
    with VideoWriter(out, width=96, height=64, fps=fps) as writer:
        for index in range(6):
            writer.write(pattern(index))
    info = probe(out)
    assert info.fps == pytest.approx(fps, rel=1e-3) and not info.has_audio
    assert [f.time_s for f in read_frames(out)] == pytest.approx(
        [i * 1001 / 30000 for i in range(6)], abs=1e-3
    )


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_writer_leaves_no_file_on_error(source: Path, tmp_path: Path, error: type[BaseException]) -> None:
    out = tmp_path / "out.mp4"
    with (
        pytest.raises(error),
        VideoWriter(out, width=96, height=64, fps=Fraction(25), audio_from=source) as w,
    ):
        w.write(pattern(0))
        assert any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir())  # writing goes to a temp
        raise error()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.mp4"]


def test_writer_keeps_an_existing_file_on_error(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous output")
    with pytest.raises(RuntimeError), VideoWriter(out, width=96, height=64, fps=Fraction(25)) as writer:
        writer.write(pattern(0))
        raise RuntimeError()
    assert out.read_bytes() == b"the previous output"


def test_writer_rejects_a_wrong_frame(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with (
        pytest.raises(VideoError, match="64×96×3"),
        VideoWriter(out, width=96, height=64, fps=Fraction(25)) as w,
    ):
        w.write(pattern(0, 32, 32))
    assert not out.exists()


def test_odd_size_is_padded_with_the_edge(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    rgb = pattern(3, 63, 95)
    with VideoWriter(out, width=95, height=63, fps=Fraction(25), crf=0) as writer:
        writer.write(rgb)
        writer.write(rgb)
    assert writer.encoded_size == (64, 96)
    (first, _) = list(read_frames(out))
    assert close(first.rgb[:63, :95], rgb)
    assert close(first.rgb[63], first.rgb[62]) and close(first.rgb[:, 95], first.rgb[:, 94])


def test_audio_that_the_container_cannot_hold_is_a_clear_error(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.webm"
    writer = VideoWriter(out, width=96, height=64, fps=Fraction(25), audio_from=source, codec="libvpx-vp9")
    with pytest.raises(VideoError, match="audio"):
        writer.__enter__()
    assert list(tmp_path.iterdir()) == [source]


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="not a readable video"):
        probe(text)
    sound_only = tmp_path / "sound.m4a"
    with av.open(str(sound_only), "w") as container:
        _write_sine(container, container.add_stream("aac", rate=AUDIO_RATE, layout="mono"), seconds=0.2)
    with pytest.raises(VideoError, match="no video stream"):
        next(read_frames(sound_only))


def test_clock_keeps_every_timestamp_whole() -> None:
    clock = clock_for(Fraction(60), Fraction(1, 15360) / 2)
    assert (Fraction(1, 60) / clock).denominator == 1 and (Fraction(1, 30720) / clock).denominator == 1


def test_overlay() -> None:
    rgb = np.full((8, 10, 3), 100, np.uint8)
    mask = np.zeros((8, 10), np.uint8)
    mask[1:7, 1:5], mask[1:7, 5:9] = 1, 2
    out = overlay(rgb, mask, alpha=0.5)
    colours = palette()
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert (out[mask == 0] == 100).all()  # background untouched
    assert (out[3, 2] == np.rint(100 * 0.5 + colours[1] * 0.5)).all()  # inside: blended
    assert (out[1, 2] == colours[1]).all() and (out[3, 5] == colours[2]).all()  # outlines
    assert len({tuple(c) for c in colours[1:33]}) == 32  # distinct per id
