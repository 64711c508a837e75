"""A stream of frames through the clip encoder, written once for every caller (the server's
sessions, ``POST /v1/clips`` and clip jobs): sampling, the ring of tubelet tokens, windows,
and which tokens run.

Every ``sampling_rate``-th frame the stream accepts is sampled and fitted to the trained
size. Each pair of sampled frames is one time slice of tubelets, embedded once (``embed``)
into S = (size/16)² tokens that go into a ring of the last ``frames_per_clip``/2 slices.
Once the ring is full, and then every ``stride`` frames, the ring is a window: its tokens,
with their positions in the window, minus the dropped ones, are encoded (``encode``) into
the window's embedding and logits. A window reuses every slice it shares with the one
before, so overlapping windows cost one ``encode`` each and no extra ``embed``.

    frame uint8 H×W×3 → (sampled) fitted uint8 s×s×3 → pair → slice tokens S×D
    window: T slices → tokens T·S×D, positions → kept K → embedding D, logits classes

The pipeline is a generator of engine work (``models/steps.py``): it yields ``EmbedRow``s or
``EncodeRow``s (never both in one batch) and is sent their results, so the offline path
runs them at once and the server batches them with other sessions' rows by ``batch_key``.

Dropping (``drop``, with ``keep_ratio`` < 1) keeps the same number of tokens K either way, so
windows of one length and ratio share their ``encode`` calls whatever their strategy:

* ``tube``: the same evenly spread spatial positions in every slice (VideoMAE's tube
  masking, inverted: ``frames.tube_keep``).
* ``static``: the tokens whose tubelet changed most since the tubelet at the same position
  one slice before (ties to the earlier token); the window's first slice has no slice
  before it in the window and ranks first, so a window sees its scene once. Static regions
  of fixed-camera footage then cost nothing. This strategy is ours (in the spirit of
  run-length tokenisation, Choudhury et al. 2024, which drops patches repeated over time),
  not the references'.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from models.steps import Steps
from models.videomae.config import VideoMAEConfig
from models.videomae.export import VideoMAEEngines
from models.videomae.frames import fit, tube_keep

Drop = Literal["tube", "static"]
DROPS: tuple[Drop, ...] = ("tube", "static")
R = TypeVar("R")
MAX_FRAMES_PER_CLIP = 64  # why: the longest window the seeds run (Papalampidi et al. 2023 go to 64+)


class ClipInputError(ValueError):
    """A clip or window setting the encoder cannot take; ``code`` says which (HTTP 422)."""

    status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WindowSpec:
    """How a stream is cut into windows, and which of a window's tokens run."""

    # sampled frames per window; even, as each tubelet spans 2 (16: the fine-tuned recipe)
    frames_per_clip: int = 16
    # source frames per sampled frame (why 4: the Kinetics-400 recipe's 16×4 clips)
    sampling_rate: int = 4
    # source frames from one window's start to the next's; None: a window's whole span
    # (frames_per_clip × sampling_rate, windows side by side); a multiple of 2×sampling_rate,
    # so each window starts on a slice the ring already holds
    stride: int | None = None
    # share of each window's tokens that run through the blocks, in (0, 1]
    keep_ratio: float = 1.0
    # which tokens a window drops when keep_ratio < 1
    drop: Drop = "tube"
    # side of the square frames the encoder sees (the checkpoints were trained at 224)
    size: int = 224

    @property
    def slices(self) -> int:
        """Time slices of tubelets per window."""
        return self.frames_per_clip // 2

    @property
    def step(self) -> int:
        """Source frames between windows."""
        return self.stride if self.stride is not None else self.frames_per_clip * self.sampling_rate

    @property
    def span(self) -> int:
        """Source frames from a window's first sampled frame to its last, both included."""
        return (self.frames_per_clip - 1) * self.sampling_rate + 1

    @property
    def slice_step(self) -> int:
        """Slices between windows."""
        return self.step // (2 * self.sampling_rate)

    def windows_in(self, frames: int) -> int:
        """Windows a clip of ``frames`` source frames gives."""
        return 0 if frames < self.span else 1 + (frames - self.span) // self.step

    def check(self, config: VideoMAEConfig) -> None:
        """Raise ``ClipInputError`` naming the first setting that cannot work."""
        fpc, rate = self.frames_per_clip, self.sampling_rate
        if not (config.tubelet <= fpc <= MAX_FRAMES_PER_CLIP and fpc % config.tubelet == 0):
            raise ClipInputError(
                "invalid_argument", f"frames_per_clip must be even, {config.tubelet} to "
                f"{MAX_FRAMES_PER_CLIP}; got {fpc}",
            )  # fmt: skip
        if rate < 1:
            raise ClipInputError("invalid_argument", f"sampling_rate must be at least 1; got {rate}")
        if self.stride is not None and (self.stride < 2 * rate or self.stride % (2 * rate)):
            raise ClipInputError(
                "invalid_argument", f"stride must be a positive multiple of 2 × sampling_rate = {2 * rate} "
                f"(windows start on a tubelet); got {self.stride}",
            )  # fmt: skip
        if not 0 < self.keep_ratio <= 1:
            raise ClipInputError("invalid_argument", f"keep_ratio must be in (0, 1]; got {self.keep_ratio}")
        if self.drop not in DROPS:
            raise ClipInputError("invalid_argument", f"drop must be one of {list(DROPS)}; got {self.drop!r}")
        if self.size % config.patch:
            raise ClipInputError("invalid_argument", f"size must be a multiple of {config.patch}")

    def spatial(self, config: VideoMAEConfig) -> int:
        """Tokens per slice (S)."""
        return (self.size // config.patch) ** 2

    def kept(self, config: VideoMAEConfig) -> int:
        """Tokens a window runs (K), the same for either strategy: per slice the share of S
        that ``keep_ratio`` gives, at least one."""
        per_slice = len(tube_keep(1, *self.grid(config), self.keep_ratio))
        return self.slices * per_slice

    def grid(self, config: VideoMAEConfig) -> tuple[int, int]:
        side = self.size // config.patch
        return side, side


# --- engine work ------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedRow:
    """One slice to embed: two fitted frames."""

    frames: Tensor  # uint8 2×s×s×3


@dataclass(frozen=True)
class EncodeRow:
    """One window to encode: its kept tokens and their positions in the window."""

    tokens: Tensor  # K×D, the engine's precision
    positions: Tensor  # int64 K


@dataclass(frozen=True)
class Encoded:
    embedding: Tensor  # float32 D
    logits: Tensor  # float32 classes


Row = EmbedRow | EncodeRow
RowResult = Tensor | Encoded  # an EmbedRow's tokens S×D, or an EncodeRow's answer


def batch_key(row: Row) -> Hashable:
    """Rows run together only when their engine inputs stack: slices of one frame size,
    windows of one kept-token count."""
    if isinstance(row, EmbedRow):
        return ("embed", *row.frames.shape)
    return ("encode", *row.tokens.shape)


def execute(engines: VideoMAEEngines, rows: Sequence[Row]) -> list[RowResult]:
    """One engine call for rows of one ``batch_key``."""
    if isinstance(rows[0], EmbedRow):
        frames = torch.stack([_of(EmbedRow, r).frames for r in rows])  # B×2×s×s×3
        tokens, _ = engines.embed(frames)
        return list(tokens.unbind(0))
    encodes = [_of(EncodeRow, r) for r in rows]
    tokens = torch.stack([r.tokens for r in encodes])  # B×K×D
    positions = torch.stack([r.positions for r in encodes])  # B×K
    embedding, logits = engines.encode(tokens, positions)
    return [Encoded(e.float(), lg.float()) for e, lg in zip(embedding, logits, strict=True)]


def _of(kind: type[R], row: object) -> R:
    assert isinstance(row, kind), f"expected {kind.__name__}, got {type(row).__name__}"
    return row


# --- the stream's state -----------------------------------------------------------------


@dataclass
class Slice:
    """One pair of sampled frames, embedded."""

    tokens: Tensor  # S×D on the engine's device
    change: Tensor  # float32 S: mean |Δ| of each tubelet's pixels from the slice before (inf: none)
    first_index: int  # frame index of its first sampled frame
    first_pts: float | None  # its presentation time, when known


@dataclass
class SampledFrame:
    pixels: np.ndarray  # uint8 s×s×3, fitted
    index: int
    pts: float | None


@dataclass
class ClipState:
    """One stream's memory of its frames: what a window still needs."""

    spec: WindowSpec
    accepted: int = 0  # frames taken so far; every sampling_rate-th is sampled
    pending: SampledFrame | None = None  # the first sampled frame of a pair not yet complete
    previous_pair: np.ndarray | None = None  # uint8 2×s×s×3, the last slice's frames (static drop)
    ring: deque[Slice] = field(default_factory=deque)  # the last ``spec.slices`` slices
    slices: int = 0  # slices embedded so far
    windows: int = 0  # windows encoded so far

    def nbytes(self, config: VideoMAEConfig, itemsize: int = 4) -> int:
        """The most this state holds: a full ring, and three fitted frames."""
        tokens = self.spec.slices * self.spec.spatial(config) * (config.width * itemsize + 4)
        return tokens + 3 * self.spec.size**2 * 3


@dataclass(frozen=True)
class Window:
    """One window's answer."""

    number: int  # 0 for the stream's first window
    start_index: int  # frame index of its first sampled frame
    end_index: int  # frame index of its last sampled frame (the frame that completed it)
    start_pts: float | None
    end_pts: float | None
    embedding: np.ndarray  # float32 D: fc_norm of the mean over the kept tokens
    logits: np.ndarray  # float32 classes
    tokens: int  # tokens that ran (K)
    tokens_total: int  # tokens the window has (T·S)


def is_sampled(state: ClipState) -> bool:
    """Whether the next frame the stream takes is a sampled one."""
    return state.accepted % state.spec.sampling_rate == 0


def frame_steps(
    config: VideoMAEConfig, state: ClipState, frame: np.ndarray, index: int, pts: float | None
) -> Steps[Row, RowResult, Window | None]:
    """frame: uint8 H×W×3, the stream's next → the window it completes, or None.

    ``state`` is changed only once the engine work is done, so a frame refused on the way
    (a full queue, a closed session) leaves it as it was; the caller checks the frame's size.
    """
    if not is_sampled(state):
        state.accepted += 1
        return None
    sampled = SampledFrame(fit(frame, state.spec.size), index, pts)
    if state.pending is None:
        state.pending, state.accepted = sampled, state.accepted + 1
        return None
    pair = np.stack([state.pending.pixels, sampled.pixels])  # 2×s×s×3
    (tokens,) = yield [EmbedRow(torch.from_numpy(pair))]
    assert isinstance(tokens, Tensor)
    change = tubelet_change(config, state.previous_pair, pair)
    new = Slice(tokens, change, state.pending.index, state.pending.pts)
    ring = deque([*state.ring, new][-state.spec.slices :])
    window: Window | None = None
    if is_window_end(state.spec, state.slices + 1):
        window = yield from window_steps(config, state, ring, sampled)
    state.ring, state.slices, state.previous_pair = ring, state.slices + 1, pair
    state.pending, state.accepted = None, state.accepted + 1
    if window is not None:
        state.windows += 1
    return window


def is_window_end(spec: WindowSpec, slices: int) -> bool:
    """Whether the ``slices``-th slice (counting from 1) completes a window."""
    return slices >= spec.slices and (slices - spec.slices) % spec.slice_step == 0


def window_steps(
    config: VideoMAEConfig, state: ClipState, ring: Sequence[Slice], last: SampledFrame
) -> Steps[Row, RowResult, Window]:
    tokens = torch.cat([s.tokens for s in ring])  # N×D, slice by slice
    total = tokens.shape[0]
    keep = keep_indices(config, state.spec, ring)
    positions = torch.arange(total, device=tokens.device)
    if keep is not None:
        keep = keep.to(tokens.device)
        tokens, positions = tokens[keep], positions[keep]
    (encoded,) = yield [EncodeRow(tokens, positions)]
    assert isinstance(encoded, Encoded)
    first = ring[0]
    return Window(
        number=state.windows,
        start_index=first.first_index,
        end_index=last.index,
        start_pts=first.first_pts,
        end_pts=last.pts,
        embedding=encoded.embedding.cpu().numpy(),
        logits=encoded.logits.cpu().numpy(),
        tokens=int(tokens.shape[0]),
        tokens_total=total,
    )


def keep_indices(config: VideoMAEConfig, spec: WindowSpec, ring: Sequence[Slice]) -> Tensor | None:
    """The window's token indices that run (int64 K, ascending), or None for every token."""
    if spec.keep_ratio >= 1:
        return None
    if spec.drop == "tube":
        return tube_keep(spec.slices, *spec.grid(config), spec.keep_ratio)
    kept = spec.kept(config)
    changes = [s.change for s in ring]
    changes[0] = first_slice_rank(config, spec, kept)
    return static_keep(torch.cat(changes), kept)


def first_slice_rank(config: VideoMAEConfig, spec: WindowSpec, kept: int) -> Tensor:
    """The window's first slice ranks above every change (nothing in the window precedes
    it, so a window always sees its scene once); when fewer tokens than a slice are kept,
    only that many of its positions, spread as ``tube`` spreads them, rank first."""
    spatial = spec.spatial(config)
    if kept >= spatial:
        return torch.full((spatial,), torch.inf)
    rank = torch.full((spatial,), -1.0)  # why -1: below any change, which is ≥ 0
    rank[tube_keep(1, *spec.grid(config), kept / spatial)] = torch.inf
    return rank


def static_keep(change: Tensor, count: int) -> Tensor:
    """The ``count`` indices of the largest ``change`` (float32 N), ties to the earlier token,
    ascending."""
    order = torch.sort(-change, stable=True).indices[:count]
    return order.sort().values


def tubelet_change(config: VideoMAEConfig, previous: np.ndarray | None, pair: np.ndarray) -> Tensor:
    """Mean absolute change of each tubelet's pixels (uint8 2×s×s×3 each) → float32 S, in
    the tokens' (h, w) order; inf everywhere when there is no previous slice."""
    side = pair.shape[1] // config.patch
    if previous is None:
        return torch.full((side * side,), torch.inf)
    diff = np.abs(pair.astype(np.int16) - previous.astype(np.int16)).astype(np.float32)
    per_patch = diff.reshape(2, side, config.patch, side, config.patch, 3).mean(axis=(0, 2, 4, 5))
    return torch.from_numpy(per_patch.reshape(-1))
