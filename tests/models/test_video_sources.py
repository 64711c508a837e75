"""Reading real files that nobody here made (tests/data/videos: stream-copied excerpts of
OpenCV's sample clips): packed B-frames, a variable frame rate, a cut MP4, a renamed PNG, and
trimming with the audio."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from models.video import Trim, VideoError, VideoWriter, probe, read_frames
from tests.conftest import REPO_ROOT
from tests.models.test_video import audio_packets

VIDEOS = REPO_ROOT / "tests" / "data" / "videos"
BFRAMES = VIDEOS / "megamind_bframes.avi"
VFR = VIDEOS / "tree_vfr.avi"
H264_AAC = VIDEOS / "cup_h264_aac.mp4"


def decoder_times(path: Path) -> list[float]:
    """The timestamps PyAV attaches to the decoded pictures, as it hands them out."""
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0)]


def variation(frames: list[np.ndarray]) -> float:
    """Mean absolute change from each picture to the next: least in the true display order."""
    return sum(float(np.abs(a.astype(np.float32) - b).mean()) for a, b in itertools.pairwise(frames))


def cut_copy(source: Path, folder: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``source``'s bytes, as an interrupted download leaves it."""
    data = source.read_bytes()
    cut = folder / f"cut{source.suffix}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


def test_packed_b_frames_come_out_in_time_order_with_even_gaps() -> None:
    raw = decoder_times(BFRAMES)
    assert any(b < a for a, b in itertools.pairwise(raw)), "the excerpt lost its out-of-order times"
    frames = list(read_frames(BFRAMES))
    times = [f.time_s for f in frames]
    gaps = np.diff(times)
    assert len(frames) == 48 and gaps == pytest.approx(np.full(47, 125 / 2997), abs=1e-6)
    assert sorted(times) == sorted(raw)  # the same instants, given in order
    # the pictures stay in the decoder's order, which is the display order: putting them in the
    # order of their attached times instead would make the motion jump back and forth
    pictures = [f.rgb for f in frames]
    by_attached = [pictures[i] for i in np.argsort(raw, kind="stable")]
    assert variation(pictures) < 0.9 * variation(by_attached)


def test_variable_frame_rate_keeps_its_times_and_is_not_short() -> None:
    """9 coded frames over 3.8 s, while the index claims 57 frames at 15 fps."""
    info = probe(VFR)
    assert (info.frames, info.fps) == (57, Fraction(1000000, 66667))
    reader = read_frames(VFR)
    frames = list(reader)
    assert len(frames) == 9
    assert [f.time_s for f in frames] == pytest.approx(decoder_times(VFR))
    assert np.diff([f.time_s for f in frames]).min() > 0.3  # gaps of 5 to 11 nominal frames
    assert reader.shortfall(info) is None
    assert reader.end_s == pytest.approx(info.duration_s, abs=0.07)


def test_a_cut_file_says_how_much_it_decoded(tmp_path: Path) -> None:
    cut = cut_copy(H264_AAC, tmp_path, 0.5)
    info = probe(cut)  # the index comes first, so the cut file still announces all 40 frames
    assert info.frames == 40
    reader = read_frames(cut)
    decoded = len(list(reader))
    assert 0 < decoded < 40
    shortfall = reader.shortfall(info)
    assert shortfall is not None
    assert f"decoded {decoded} frames of the 40 it announces" in shortfall
    assert f"stopped at {reader.end_s:.3f} s of {info.duration_s:.3f} s" in shortfall
    whole = read_frames(H264_AAC)
    assert len(list(whole)) == 40 and whole.shortfall(probe(H264_AAC)) is None


def test_an_image_named_like_a_video_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(fake, format="PNG")
    with pytest.raises(VideoError, match=r"clip\.mp4: is a PNG image, not a video"):
        probe(fake)
    with pytest.raises(VideoError, match="is a PNG image"):
        next(read_frames(fake))


def test_trim_reads_a_window_and_copies_its_audio(tmp_path: Path) -> None:
    trim = Trim(0.5, 1.0)
    frames = list(read_frames(H264_AAC, trim))
    every = [f.time_s for f in read_frames(H264_AAC)]
    assert [f.time_s for f in frames] == [t for t in every if 0.5 <= t < 1.0]
    assert [f.index for f in frames] == list(range(len(frames)))
    out = tmp_path / "window.mp4"
    with VideoWriter(
        out, width=640, height=480, fps=probe(H264_AAC).fps, audio_from=H264_AAC, audio_trim=trim
    ) as w:
        for frame in frames:
            w.write(frame.rgb, frame.time_s - trim.start_s)
    written = [f.time_s for f in read_frames(out)]
    # why 1 ms: MP4 stores a first frame's offset in an edit list of the movie's 1 kHz clock
    assert written[0] == pytest.approx(frames[0].time_s - 0.5, abs=1e-3)
    source_audio = [(t - 0.5, data) for t, data in audio_packets(H264_AAC) if 0.5 <= t < 1.0]
    copied = audio_packets(out)
    assert [data for _, data in copied] == [data for _, data in source_audio]
    assert [t for t, _ in copied] == pytest.approx([t for t, _ in source_audio], abs=1e-3)


def test_trim_must_be_a_window() -> None:
    with pytest.raises(VideoError, match="after start"):
        Trim(2.0, 1.0)
    with pytest.raises(VideoError, match="≥ 0"):
        Trim(-1.0)
    assert list(read_frames(H264_AAC, Trim(5.0))) == []  # past the end: nothing, not an error
