"""``python -m clients`` against real servers (RIFE v4.0 weights, XMem with the conformance
recipe's hashed weights) on small videos made with PyAV and on real files (tests/data/videos):
frame rates, timestamps, B-frame sources, a target rate on a variable-rate source, dedup,
trims, audio, scene cuts, a cut file's warning, mask outputs, user errors, Ctrl-C and SIGTERM."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from clients.cli import main
from clients.cli.sinks import MaskFolder
from models.images import read_index_mask, write_index_png
from models.video import overlay, probe, read_frames
from tests.conftest import REPO_ROOT
from tests.models.test_video import audio_packets, close, make_video
from tests.models.test_video_sources import BFRAMES, H264_AAC, VFR, cut_copy
from tests.server.support import (
    RunningServer,
    decode,
    free_port,
    panning_frames,
    png,
    running_server,
    server_settings,
)

SEQ = "seq_a"


@pytest.fixture(scope="module")
def rife_server(rife_v40_weights: Path, engine_repository: Path) -> Iterator[RunningServer]:
    with running_server(server_settings(rife_v40_weights, engine_repository)) as running:
        yield running


def cli(
    *args: str | Path, server: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m clients ARGS`` as a user runs it, with VIDSERVE_URL pointing at ``server``."""
    env = {**os.environ, **({"VIDSERVE_URL": server} if server else {})}
    command = [sys.executable, "-m", "clients", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def leftovers(folder: Path) -> list[str]:
    """Temporary outputs (``.NAME.TOKEN.partial...``) left in ``folder``."""
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


# --- interpolate --------------------------------------------------------------------------


def test_interpolate_doubles_the_frame_rate(rife_server: RunningServer, tmp_path: Path) -> None:
    video, out = tmp_path / "pan.mp4", tmp_path / "double.mp4"
    make_video(video, panning_frames(8), fps=25)
    done = cli("interpolate", video, "--factor", "2", "--out", out, server=rife_server.url)
    assert done.returncode == 0, done.stderr
    assert "frame/s" in done.stderr  # the progress bar

    info = probe(out)
    assert (info.width, info.height, info.fps, info.frames) == (96, 64, 50, 16)
    frames = list(read_frames(out))
    assert [f.time_s for f in frames] == pytest.approx([i / 50 for i in range(16)], abs=1e-4)
    originals = list(read_frames(video))
    for index, original in enumerate(originals):
        assert close(frames[2 * index].rgb, original.rgb)
    # the in-between is RIFE's frame for the pair, as one REST call gives it (up to the codec)
    pair = {"frame0": png(originals[0].rgb), "frame1": png(originals[1].rgb)}
    middle = decode(httpx.post(f"{rife_server.url}/v1/interpolate", files=pair, timeout=60).content)
    assert close(frames[1].rgb, middle) and not close(frames[1].rgb, frames[0].rgb, tolerance=0.5)
    assert audio_packets(video), "the test clip has no audio to copy"
    assert audio_packets(out) == audio_packets(video)
    assert leftovers(tmp_path) == []


def test_interpolate_holds_the_frame_at_a_scene_cut(rife_server: RunningServer, tmp_path: Path) -> None:
    """Frames 0–2 pan, 3–5 are another picture: the pair (2, 3) is a cut, so its in-betweens are
    frame 2 itself (lossless output: exactly), never a blend of the two pictures."""
    pan = panning_frames(6)
    frames = pan[:3] + [255 - f for f in pan[3:]]
    video, out = tmp_path / "cut.mkv", tmp_path / "out.mkv"
    make_video(video, frames, fps=24, audio=False)
    argv = ["interpolate", str(video), "--factor", "3", "--crf", "0", "--out", str(out), "--quiet"]
    assert main([*argv, "--server", rife_server.url]) == 0
    got = [f.rgb for f in read_frames(out)]
    assert len(got) == 18 and probe(out).fps == 72
    for between in got[7:9]:  # after frame 2 (output 6), before frame 3 (output 9)
        assert np.array_equal(between, got[6])
    assert not np.array_equal(got[4], got[3])  # pairs that are not cuts are interpolated


def test_interpolate_user_errors(
    rife_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "pan.mp4"
    make_video(video, panning_frames(2), audio=False)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    url = ["--server", rife_server.url]
    cases = [
        (
            ["interpolate", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.mp4"), *url],
            "no such file",
        ),
        (["interpolate", str(text), "--out", str(tmp_path / "o.mp4"), *url], "not a readable video"),
        (["interpolate", str(video), "--out", str(tmp_path / "o.gif"), *url], "give a video file name"),
        (["interpolate", str(video), "--factor", "1", "--out", str(tmp_path / "o.mp4"), *url], "2 to 64"),
        (
            [
                "interpolate",
                str(video),
                "--out",
                str(tmp_path / "o.mp4"),
                "--server",
                f"http://127.0.0.1:{free_port()}",
            ],
            "cannot reach the vidserve server",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4", "pan.mp4"]


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl_c", "sigterm"],
)
def test_a_signal_stops_cleanly(
    rife_server: RunningServer, tmp_path: Path, signum: int, code: int, said: str
) -> None:
    """SIGINT (Ctrl-C) or SIGTERM once frames are flowing: exit 130 or 143, no output file, no
    temporary file, and the session deleted on the server."""
    video, out = tmp_path / "long.mp4", tmp_path / "out.mp4"
    make_video(video, panning_frames(300, step=0), fps=30)
    env = {**os.environ, "VIDSERVE_URL": rife_server.url}
    command = [sys.executable, "-m", "clients", "interpolate", str(video), "--out", str(out)]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    try:
        assert process.stderr is not None
        progress = wait_for_progress(process.stderr.fileno(), timeout=60)
        assert progress < 300, "still mid-run when the signal lands"
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, err.decode()
    assert said in err.decode() and "Traceback" not in err.decode()
    assert not out.exists() and leftovers(tmp_path) == []
    assert len(rife_server.state.sessions) == 0


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, as a terminal gives it.

    A background job of a non-interactive shell inherits SIGINT ignored, and a Python started
    so installs no KeyboardInterrupt handler: Ctrl-C would then never reach the CLI."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_progress(fd: int, timeout: float) -> int:
    """Read the progress bar from ``fd`` until it shows a frame done; that frame count."""
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"the CLI ended before any progress: {seen.decode()}"
            seen += chunk
            counts = [int(n) for n in re.findall(rb"(\d+)/300", seen)]
            if counts and max(counts) >= 1:
                return max(counts)
    raise TimeoutError(f"no progress in {timeout} s: {seen.decode()}")


# --- interpolate: real files (tests/data/videos) -----------------------------------------


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
    cut = cut_copy(H264_AAC, tmp_path, 0.3)
    out = tmp_path / "out.mp4"
    done = cli("interpolate", cut, "--out", out, server=rife_server.url)
    assert done.returncode == 0, done.stderr
    decoded = len(list(read_frames(cut)))
    assert f"warning: cut.mp4: decoded {decoded} frames of the 40 it announces" in done.stderr
    assert f"{decoded}/{decoded}" in done.stderr  # the bar's total follows the real count
    assert probe(out).frames == 2 * decoded
    few = ["--fps", "4", "--quiet"]  # why 4 fps: few frames to interpolate, the warning is the point
    quiet = cli("interpolate", cut, *few, "--out", tmp_path / "q.mp4", server=rife_server.url)
    assert "warning: cut.mp4" in quiet.stderr  # a warning is no progress bar: --quiet keeps it


def test_a_png_named_mp4_is_refused(rife_server: RunningServer, tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(fake, format="PNG")
    done = cli("interpolate", fake, "--out", tmp_path / "out.mp4", server=rife_server.url)
    assert done.returncode == 1
    assert "clip.mp4: is a PNG image, not a video" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_segment_warns_on_a_cut_file(xmem_server: RunningServer, tmp_path: Path) -> None:
    cut = cut_copy(H264_AAC, tmp_path, 0.3)
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


# --- segment ------------------------------------------------------------------------------


@pytest.fixture()
def seq_video(tmp_path: Path, xmem_vectors: Any) -> tuple[Path, np.ndarray, np.ndarray]:
    """seq_a's first 10 frames as a (near-lossless) video with audio, and its masks on
    frame 0 (objects 1, 2) and frame 6 (object 3, where the recipe adds it)."""
    frames, masks = xmem_vectors[f"{SEQ}/frames_u8"][:10], xmem_vectors[f"{SEQ}/masks_u8"]
    video = tmp_path / "seq.mp4"
    make_video(video, list(frames), fps=10)
    first = np.where(np.isin(masks[0], [1, 2]), masks[0], 0).astype(np.uint8)
    third = np.where(masks[6] == 3, 3, 0).astype(np.uint8)
    write_index_png(tmp_path / "mask0.png", first)
    write_index_png(tmp_path / "mask6.png", third)
    return video, first, third


def test_segment_into_a_folder(
    xmem_server: RunningServer, tmp_path: Path, seq_video: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    """Index PNGs and masks.json whose RLEs decode to them; object 3 from frame 6 on."""
    video, first, third = seq_video
    out = tmp_path / "masks"
    done = cli(
        "segment", video, "--mask", tmp_path / "mask0.png", "--mask-at", f"6:{tmp_path / 'mask6.png'}",
        "--size", "none", "--out", out, server=xmem_server.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(10)] + ["masks.json"]
    body = json.loads((out / "masks.json").read_text())
    assert (body["width"], body["height"], body["objects"]) == (96, 64, [1, 2, 3])
    assert [f["index"] for f in body["frames"]] == list(range(10))
    assert [f["time_s"] for f in body["frames"]] == pytest.approx([i / 10 for i in range(10)])
    for entry in body["frames"]:
        index = read_index_mask(out / entry["file"])
        assert index.shape == (64, 96)
        assert sorted(entry["masks"]) == (["1", "2"] if entry["index"] < 6 else ["1", "2", "3"])
        for object_id, rle in entry["masks"].items():
            assert rle["size"] == [64, 96] and isinstance(rle["counts"], str)
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), index == int(object_id))
        if entry["index"] < 6:
            assert not (index == 3).any()
    assert np.array_equal(read_index_mask(out / "00000.png"), first)  # the given mask comes back
    assert (read_index_mask(out / "00006.png")[third == 3] == 3).all()  # and --mask-at's object
    assert leftovers(tmp_path) == [] and len(xmem_server.state.sessions) == 0


def test_segment_into_an_overlay_video(
    xmem_server: RunningServer,
    tmp_path: Path,
    seq_video: tuple[Path, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    video, first, _ = seq_video
    out = tmp_path / "overlay.mp4"
    argv = ["segment", str(video), "--mask", str(tmp_path / "mask0.png"), "--size", "none", "--quiet"]
    late = ["--mask-at", f"40:{tmp_path / 'mask6.png'}"]  # past the end: a warning, not an error
    assert main([*argv, *late, "--out", str(out), "--server", xmem_server.url]) == 0
    assert "masks for frames [40] were not used: the video has 10 frames" in capsys.readouterr().err
    source, info = probe(video), probe(out)
    assert (info.fps, info.frames, info.width, info.height) == (source.fps, 10, 96, 64)
    frames = list(read_frames(out))
    assert [f.time_s for f in frames] == [f.time_s for f in read_frames(video)]
    assert audio_packets(video), "the test clip has no audio to copy"
    assert audio_packets(out) == audio_packets(video)
    # frame 0 shows its given mask drawn: inside the objects, much nearer the overlay than the
    # plain frame (yuv420p blurs colour edges, so not equal); outside, the frame unchanged
    original, got = next(read_frames(video)).rgb.astype(int), frames[0].rgb.astype(int)
    drawn, inside = overlay(original.astype(np.uint8), first).astype(int), first > 0
    assert np.abs(got - drawn)[inside].mean() < np.abs(got - original)[inside].mean() / 3
    assert np.abs(got - original)[~inside].mean() < 8


def test_segment_user_errors(
    xmem_server: RunningServer,
    tmp_path: Path,
    seq_video: tuple[Path, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    video, _, _ = seq_video
    small = tmp_path / "small.png"
    write_index_png(small, np.ones((32, 48), np.uint8))
    base = ["segment", str(video), "--server", xmem_server.url, "--size", "none"]
    out = ["--out", str(tmp_path / "o")]
    cases = [
        ([*base, *out], "--mask"),
        ([*base, "--mask", str(small), *out], "the mask is 48×32 but the video is 96×64"),
        ([*base, "--mask", str(tmp_path / "nope.png"), *out], "no such mask file"),
        ([*base, "--mask", str(tmp_path / "mask0.png"), "--objects", "7", *out], "among --objects"),
        ([*base, "--mask", str(tmp_path / "mask0.png"), "--out", str(tmp_path / "o.avi")], "a folder has no"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_mask_folder_is_all_or_nothing(
    seq_video: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path, error: type[BaseException]
) -> None:
    video, first, _ = seq_video
    out = tmp_path / "masks"
    frame = next(read_frames(video))
    with pytest.raises(error), MaskFolder(out, probe(video), video=video, objects=[1, 2]) as folder:
        folder.write(frame, first, [1, 2])
        assert leftovers(tmp_path) != []  # written beside out, not into it
        raise error()
    assert not out.exists() and leftovers(tmp_path) == []
