"""``python -m clients interpolate`` on real files (tests/data/videos) against a real RIFE
v4.0 server: B-frame sources with even gaps, a target frame rate on a variable-rate source,
dedup, trims, a cut file's warning (``segment``'s too) and a renamed PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.images import write_index_png
from models.video import probe, read_frames
from tests.clients.test_cli import cli, rife_server
from tests.models.test_video import close, make_video
from tests.models.test_video_sources import BFRAMES, H264_AAC, VFR, cut_copy
from tests.server.support import RunningServer, panning_frames

__all__ = ["rife_server"]  # why: the shared module-scoped server, used by name as a fixture


def gaps(path: Path) -> np.ndarray:
    return np.diff([f.time_s for f in read_frames(path)])


def test_a_b_frame_source_doubles_with_even_gaps(rife_server: RunningServer, tmp_path: Path) -> None:
    """Packed B-frames: each pair is two frames consecutive in time, and every in-between
    shows halfway, so the output's gaps are all one half of the source's."""
    out = tmp_path / "double.mp4"  # why not .mkv: Matroska keeps times in whole milliseconds
    done = cli("interpolate", BFRAMES, "--end", "0.5", "--crf", "0", "--out", out, server=rife_server.url)
    assert done.returncode == 0, done.stderr
    source = list(read_frames(BFRAMES))
    kept = [f for f in source if f.time_s < 0.5]
    frames = list(read_frames(out))
    assert len(frames) == 2 * len(kept)
    assert gaps(out) == pytest.approx(np.full(len(frames) - 1, 125 / 2997 / 2), abs=2e-4)
    for index, original in enumerate(kept):
        assert close(frames[2 * index].rgb, original.rgb)


def test_a_target_rate_from_a_variable_rate_source(rife_server: RunningServer, tmp_path: Path) -> None:
    """9 frames over 3.8 s (gaps of 0.4-0.73 s) to constant 30 fps, trimmed to 0.5-2.5 s: 60
    frames at k/30, the source frames where they fall on an instant, RIFE's in between."""
    out = tmp_path / "thirty.mp4"
    trim = ["--start", "0.5", "--end", "2.5"]
    done = cli("interpolate", VFR, "--fps", "30", *trim, "--crf", "0", "--out", out, server=rife_server.url)
    assert done.returncode == 0, done.stderr
    info = probe(out)
    assert info.fps == 30
    frames = list(read_frames(out))
    assert [f.time_s for f in frames] == pytest.approx([k / 30 for k in range(60)], abs=2e-4)
    source = list(read_frames(VFR))
    assert source[1].time_s == pytest.approx(0.5 + 7 / 30, abs=1e-5)  # 11/15 s: output frame 7
    assert close(frames[7].rgb, source[1].rgb)
    assert not close(frames[4].rgb, source[0].rgb, tolerance=0.5)  # interpolated, not held
    assert "wrote" in done.stderr and "60 frames at 30 fps" in done.stderr


def test_dedup_drops_repeated_frames(rife_server: RunningServer, tmp_path: Path) -> None:
    """A 24 fps clip whose every picture shows twice (a 12 fps source doubled): --dedup drops
    the repeats and the 2× output is interpolated evenly between the real pictures."""
    pictures = panning_frames(6)
    video, out = tmp_path / "twos.mp4", tmp_path / "out.mp4"
    make_video(video, [p for p in pictures for _ in range(2)], fps=24, audio=False)
    done = cli("interpolate", video, "--dedup", "--crf", "0", "--out", out, server=rife_server.url)
    assert done.returncode == 0, done.stderr
    assert "6 repeated source frames dropped" in done.stderr
    frames = [f.rgb for f in read_frames(out)]
    assert len(frames) == 24 and probe(out).fps == 48
    assert gaps(out) == pytest.approx(np.full(23, 1 / 48), abs=2e-4)
    for index, picture in enumerate(pictures):
        assert close(frames[4 * index], picture)  # each real picture at its own time
    assert not close(frames[2], frames[0], tolerance=0.5)  # a repeat's slot is interpolated
    plain = cli("interpolate", video, "--crf", "0", "--out", tmp_path / "plain.mp4", server=rife_server.url)
    assert plain.returncode == 0 and "dropped" not in plain.stderr


def test_a_cut_file_warns_and_counts_what_it_decoded(rife_server: RunningServer, tmp_path: Path) -> None:
    cut = cut_copy(H264_AAC, tmp_path, 0.5)
    out = tmp_path / "out.mp4"
    done = cli("interpolate", cut, "--out", out, server=rife_server.url)
    assert done.returncode == 0, done.stderr
    decoded = len(list(read_frames(cut)))
    assert f"warning: cut.mp4: decoded {decoded} frames of the 40 it announces" in done.stderr
    assert f"{decoded}/{decoded}" in done.stderr  # the bar's total follows the real count
    assert probe(out).frames == 2 * decoded
    quiet = cli("interpolate", cut, "--quiet", "--out", tmp_path / "q.mp4", server=rife_server.url)
    assert "warning: cut.mp4" in quiet.stderr  # a warning is no progress bar: --quiet keeps it


def test_a_png_named_mp4_is_refused(rife_server: RunningServer, tmp_path: Path) -> None:
    from PIL import Image

    fake = tmp_path / "clip.mp4"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(fake, format="PNG")
    done = cli("interpolate", fake, "--out", tmp_path / "out.mp4", server=rife_server.url)
    assert done.returncode == 1
    assert "clip.mp4: is a PNG image, not a video" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_segment_warns_on_a_cut_file(xmem_server: RunningServer, tmp_path: Path) -> None:
    cut = cut_copy(H264_AAC, tmp_path, 0.5)
    mask = np.zeros((480, 640), np.uint8)
    mask[200:300, 250:400] = 1
    write_index_png(tmp_path / "mask.png", mask)
    out = tmp_path / "masks"
    done = cli("segment", cut, "--mask", tmp_path / "mask.png", "--size", "120", "--out", out,
               server=xmem_server.url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    decoded = len(list(read_frames(cut)))
    assert f"warning: cut.mp4: decoded {decoded} frames of the 40 it announces" in done.stderr
    assert len(list(out.glob("*.png"))) == decoded
