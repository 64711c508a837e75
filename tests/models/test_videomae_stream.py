"""The clip encoder's stream pipeline (``models/videomae/inference.py``): windows of a stream
are what the network gives the same frames as one clip, each slice is embedded once, the
strategies keep what they say, and a refused frame leaves the stream as it was."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import pytest
import torch

from models.steps import run_steps
from models.videomae.export import VideoMAEEngines, eager_engines
from models.videomae.frames import fit, tube_keep
from models.videomae.inference import (
    ClipInputError,
    ClipState,
    EmbedRow,
    EncodeRow,
    Row,
    RowResult,
    Window,
    WindowSpec,
    execute,
    first_slice_rank,
    frame_steps,
    keep_indices,
    static_keep,
)
from models.videomae.network import VideoViT
from tests.models.test_videomae import hashed_net

# why: eager against eager on the same weights; only the order of float sums differs
TOLERANCE = 1e-5


@cache
def net() -> VideoViT:
    return hashed_net("vit-s")


class CountingEngines:
    """The real eager engines, counting the rows each part is given."""

    def __init__(self, engines: VideoMAEEngines) -> None:
        self.engines = engines
        self.rows: list[Row] = []

    def __call__(self, rows: Sequence[Row]) -> list[RowResult]:
        self.rows += rows
        return execute(self.engines, rows)


def run_stream(spec: WindowSpec, frames: Sequence[np.ndarray]) -> tuple[list[Window], CountingEngines]:
    state, engines = ClipState(spec), CountingEngines(eager_engines(net()))
    windows = []
    for index, frame in enumerate(frames):
        window = run_steps(frame_steps(net().config, state, frame, index, index / 30), engines)
        if window is not None:
            windows.append(window)
    return windows, engines


def clip_frames(count: int, seed: int = 0, hw: tuple[int, int] = (120, 160)) -> list[np.ndarray]:
    gen = np.random.default_rng(seed)
    return [gen.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(count)]


def direct(
    frames: Sequence[np.ndarray], window: Window, spec: WindowSpec, keep: torch.Tensor | None
) -> Window:
    """The same window as one clip through the whole network."""
    sampled = [
        fit(frames[i], spec.size) for i in range(window.start_index, window.end_index + 1, spec.sampling_rate)
    ]
    assert len(sampled) == spec.frames_per_clip
    with torch.inference_mode():
        embedding, logits = net()(torch.from_numpy(np.stack(sampled))[None], keep)
    return Window(0, 0, 0, None, None, embedding[0].numpy(), logits[0].numpy(), 0, 0)


@pytest.mark.parametrize("keep_ratio", [1.0, 0.5])
def test_windows_are_the_network_on_the_same_frames(keep_ratio: float) -> None:
    """Overlapping windows (stride half a window) reuse the slices they share: each pair of
    sampled frames is embedded once, each window encoded once, and each window is what the
    network gives its sampled frames as one clip. At 112 (7×7 patches a slice; 224 only
    makes it 4 times the work)."""
    spec = WindowSpec(frames_per_clip=6, sampling_rate=2, stride=4, keep_ratio=keep_ratio, size=112)
    frames = clip_frames(21)
    windows, engines = run_stream(spec, frames)
    assert [(w.start_index, w.end_index) for w in windows] == [(0, 10), (4, 14), (8, 18)]
    assert spec.windows_in(len(frames)) == len(windows)
    embeds = [r for r in engines.rows if isinstance(r, EmbedRow)]
    assert len(embeds) == 5  # sampled frames 0, 2, …, 18 in pairs: each once
    assert sum(isinstance(r, EncodeRow) for r in engines.rows) == len(windows)
    keep = None if keep_ratio == 1 else tube_keep(spec.slices, 7, 7, keep_ratio)
    for window in windows:
        want = direct(frames, window, spec, keep)
        np.testing.assert_allclose(window.embedding, want.embedding, atol=TOLERANCE)
        np.testing.assert_allclose(window.logits, want.logits, atol=TOLERANCE)
        assert window.tokens == (147 if keep is None else len(keep)) and window.tokens_total == 147
    assert windows[1].start_pts == pytest.approx(4 / 30) and windows[1].end_pts == pytest.approx(14 / 30)


def test_sixty_four_frames_at_a_quarter_run_a_sixteen_frame_budget() -> None:
    """The seeds' long windows: 64 sampled frames, the position table computed for 32 slices,
    a quarter of the tokens kept, which is what 16 frames cost in full."""
    spec = WindowSpec(frames_per_clip=64, sampling_rate=1, keep_ratio=0.25, size=64)
    frames = clip_frames(64, seed=3, hw=(64, 64))
    (window,), _ = run_stream(spec, frames)
    keep = tube_keep(32, 4, 4, 0.25)
    assert window.tokens == len(keep) == 32 * 4 == WindowSpec(frames_per_clip=16, size=64).slices * 16
    want = direct(frames, window, spec, keep)
    np.testing.assert_allclose(window.embedding, want.embedding, atol=TOLERANCE)


def test_static_drops_what_did_not_change() -> None:
    """A fixed camera on a still scene where the top two rows of patches change: after the
    window's first slice, the tokens that run are the changing ones, and the window is the
    network on exactly those."""
    spec = WindowSpec(frames_per_clip=8, sampling_rate=1, keep_ratio=0.5, drop="static", size=64)
    still = clip_frames(1, seed=1, hw=(64, 64))[0]
    frames = []
    for k in range(8):
        frame = still.copy()
        frame[:32] = 30 * k  # patch rows 0 and 1 (spatial 0..7) change alike every frame
        frames.append(frame)
    state = ClipState(spec)
    engines = eager_engines(net())
    for index, frame in enumerate(frames):
        window = run_steps(
            frame_steps(net().config, state, frame, index, None), lambda r: execute(engines, r)
        )
    assert window is not None
    keep = keep_indices(net().config, spec, state.ring)
    assert keep is not None
    # 4 slices of 16, half kept: all of slice 0, then 16 of the 24 changed tokens (ties: earlier)
    assert keep.tolist() == [*range(16), *range(16, 24), *range(32, 40)]
    assert window.tokens == len(keep) == spec.kept(net().config)
    want = direct(frames, window, spec, keep)
    np.testing.assert_allclose(window.embedding, want.embedding, atol=TOLERANCE)


def test_a_first_slice_larger_than_the_budget_is_spread() -> None:
    spec = WindowSpec(frames_per_clip=16, keep_ratio=0.0625, drop="static", size=64)
    rank = first_slice_rank(net().config, spec, spec.kept(net().config))
    assert spec.kept(net().config) == 8 and torch.isinf(rank).sum() == 8
    assert torch.isinf(rank).nonzero().flatten().tolist() == tube_keep(1, 4, 4, 0.5).tolist()


def test_ties_go_to_the_earlier_token() -> None:
    assert static_keep(torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0]), 2).tolist() == [1, 2]


def test_a_refused_frame_leaves_the_stream_as_it_was() -> None:
    """An engine call that fails (a full queue, a closed session) changes nothing: the same
    frame sent again gives what it would have given."""
    spec = WindowSpec(frames_per_clip=2, sampling_rate=1)
    frames = clip_frames(2, seed=5)
    state, engines = ClipState(spec), eager_engines(net())
    run_steps(frame_steps(net().config, state, frames[0], 0, None), lambda r: execute(engines, r))

    def refuse(rows: Sequence[Row]) -> list[RowResult]:
        raise RuntimeError("queue full")

    before = (state.accepted, state.slices, state.windows, state.pending)
    with pytest.raises(RuntimeError):
        run_steps(frame_steps(net().config, state, frames[1], 1, None), refuse)
    assert (state.accepted, state.slices, state.windows, state.pending) == before and not state.ring
    window = run_steps(frame_steps(net().config, state, frames[1], 1, None), lambda r: execute(engines, r))
    assert window is not None and window.number == 0 and state.windows == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (WindowSpec(frames_per_clip=5), "frames_per_clip must be even"),
        (WindowSpec(frames_per_clip=66), "frames_per_clip must be even, 2 to 64"),
        (WindowSpec(sampling_rate=4, stride=6), "multiple of 2 × sampling_rate = 8"),
        (WindowSpec(keep_ratio=0.0), "keep_ratio must be in (0, 1]"),
        (WindowSpec(keep_ratio=1.5), "keep_ratio must be in (0, 1]"),
        (WindowSpec(drop="random"), "drop must be one of"),  # type: ignore[arg-type]
    ],
)
def test_settings_that_cannot_work_are_named(spec: WindowSpec, says: str) -> None:
    with pytest.raises(ClipInputError, match=says.replace("(", r"\(").replace(")", r"\)")):
        spec.check(net().config)
