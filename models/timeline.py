"""Where a retimed video's frames go: for each source frame, the timesteps of the in-between
frames its pair (previous frame, this one) needs and the output times of all of them.

Two timelines: ``FactorTimeline`` keeps every source frame at its own time and puts N-1
in-betweens at i/N of each pair (a variable-rate source stays variable); ``RateTimeline``
writes constant frame rate output, each output frame at its instant k/fps, interpolated at
its own timestep between the two source frames around it (RIFE's arbitrary timestep, as
vs-rife and Flowframes use it: 24→60 is no integer factor). Both are driven a frame at a time,
so a clip of any length is retimed as it is decoded. ``Deduplicator`` drops repeated source
frames before either.

Times are seconds. Source times are the decoder's; output times start at ``origin`` (the
trim's start, else 0), as what is written starts at 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import numpy as np

from models.video import TIME_TOLERANCE_S

# why mpdecimate's numbers (FFmpeg's duplicate-frame filter, which Flowframes' ffmpeg dedup
# mode runs): a frame repeats the last kept one when no 8×8 luma block differs by more than
# 12 levels on average, and at most a third of the blocks by more than 5
DEDUP_BLOCK = 8
DEDUP_HI = 12.0
DEDUP_LO = 5.0
DEDUP_FRAC = 0.33
# why a cap: a still held longer than this many dropped frames is kept now and then, so
# the first frame after it is interpolated from a near neighbour instead of morphing
# across the whole still
DEDUP_MAX_RUN = 4


def rate_of(text: str) -> Fraction:
    """A frame rate as users write one: 60, 59.94 or 60000/1001. A decimal within 0.01 of an
    NTSC rate (N×1000/1001) is taken as that rate, as editors mean it. ValueError when it is
    not a positive number."""
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a frame rate (60, 59.94 or 60000/1001)") from None
    if rate <= 0:
        raise ValueError(f"a frame rate must be above 0, got {text!r}")
    ntsc = Fraction(round(rate * 1001 / 1000) * 1000, 1001)
    is_ntsc = rate.denominator != 1 and abs(rate - ntsc) < Fraction(1, 100)
    return ntsc if is_ntsc else rate


@dataclass(frozen=True)
class PairPlan:
    """What one source frame brings to the output."""

    timesteps: list[float]  # in (0, 1), increasing: in-betweens of (previous frame, this one)
    between_s: list[float]  # the output time of each in-between
    this_s: list[float]  # output times at which this frame itself is shown (often one, or none)

    @property
    def outputs(self) -> int:
        return len(self.between_s) + len(self.this_s)


class Timeline(Protocol):
    def pair(self, previous_s: float | None, time_s: float) -> PairPlan:
        """The plan for a source frame at ``time_s`` after one at ``previous_s`` (None: first)."""
        ...

    def tail(self, last_s: float, end_s: float) -> list[float]:
        """Output times at which the last frame (at ``last_s``) is held, up to the source's
        end (``end_s``, the last frame's time plus its duration)."""
        ...


@dataclass
class FactorTimeline:
    """N× the frame rate: originals at their times, N-1 in-betweens at i/N of each pair."""

    factor: int  # N
    fps: Fraction  # the source's average rate: the last frame holds over N-1 slots of N × fps
    origin: float = 0.0  # source time written at 0

    def pair(self, previous_s: float | None, time_s: float) -> PairPlan:
        this = [time_s - self.origin]
        if previous_s is None:
            return PairPlan([], [], this)
        steps = [i / self.factor for i in range(1, self.factor)]
        span = time_s - previous_s
        return PairPlan(steps, [previous_s - self.origin + t * span for t in steps], this)

    def tail(self, last_s: float, end_s: float) -> list[float]:
        # why not up to end_s: exactly N× the frames, and the input's duration, as before
        slot = 1 / float(self.fps * self.factor)
        return [last_s - self.origin + k * slot for k in range(1, self.factor)]


@dataclass
class RateTimeline:
    """Constant ``fps`` output: output frame k at k/fps, showing the source at origin + k/fps.
    Instants before the first frame show it; instants on a source frame show that frame."""

    fps: Fraction  # output frames per second
    origin: float = 0.0  # source time of output frame 0
    next_k: int = field(default=0, init=False)  # the first output frame not yet planned

    def _instant(self, k: int) -> tuple[float, float]:
        """(output time, source time) of output frame k, exact in the output clock."""
        out = float(Fraction(k) / self.fps)
        return out, self.origin + out

    def pair(self, previous_s: float | None, time_s: float) -> PairPlan:
        steps: list[float] = []
        between: list[float] = []
        this: list[float] = []
        while True:
            out, source = self._instant(self.next_k)
            if source > time_s + TIME_TOLERANCE_S:
                break
            is_this_frame = previous_s is None or source >= time_s - TIME_TOLERANCE_S
            if is_this_frame:
                this.append(out)
            else:
                assert previous_s is not None
                steps.append((source - previous_s) / (time_s - previous_s))
                between.append(out)
            self.next_k += 1
        return PairPlan(steps, between, this)

    def tail(self, last_s: float, end_s: float) -> list[float]:
        held: list[float] = []
        while (instant := self._instant(self.next_k))[1] < end_s - TIME_TOLERANCE_S:
            held.append(instant[0])
            self.next_k += 1
        return held


@dataclass
class Deduplicator:
    """Drop source frames that repeat the last kept one (FFmpeg's mpdecimate test; see the
    constants), at most ``max_run`` in a row."""

    hi: float = DEDUP_HI  # mean levels (0-255) an 8×8 luma block may differ by, at most
    max_run: int = DEDUP_MAX_RUN  # consecutive frames dropped at most
    dropped: int = 0  # frames dropped so far
    _kept: np.ndarray | None = field(default=None, init=False, repr=False)  # float32 luma H×W
    _run: int = field(default=0, init=False)

    def is_repeat(self, rgb: np.ndarray) -> bool:
        """rgb: uint8 H×W×3. True: drop it; False: keep it (it becomes the reference)."""
        luma = _luma(rgb)
        repeats = self._kept is not None and self._run < self.max_run and self._same(self._kept, luma)
        if repeats:
            self._run += 1
            self.dropped += 1
            return True
        self._kept, self._run = luma, 0
        return False

    def _same(self, kept: np.ndarray, luma: np.ndarray) -> bool:
        if kept.shape != luma.shape:
            return False
        blocks = _block_means(np.abs(luma - kept))
        lo = DEDUP_LO * self.hi / DEDUP_HI  # why scaled: one knob moves both of mpdecimate's
        return bool(blocks.max() <= self.hi and (blocks > lo).mean() <= DEDUP_FRAC)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 → float32 H×W, BT.601 weights (what an encoder's Y plane holds)."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    luma: np.ndarray = rgb.astype(np.float32) @ weights
    return luma


def _block_means(diff: np.ndarray) -> np.ndarray:
    """float32 H×W → the mean of each 8×8 block (edge blocks cut to the frame)."""
    h, w = diff.shape
    rows, cols = -(-h // DEDUP_BLOCK), -(-w // DEDUP_BLOCK)
    padded = np.zeros((rows * DEDUP_BLOCK, cols * DEDUP_BLOCK), np.float32)
    padded[:h, :w] = diff
    sums = padded.reshape(rows, DEDUP_BLOCK, cols, DEDUP_BLOCK).sum(axis=(1, 3))
    counts = np.zeros_like(padded)
    counts[:h, :w] = 1
    sizes = counts.reshape(rows, DEDUP_BLOCK, cols, DEDUP_BLOCK).sum(axis=(1, 3))
    means: np.ndarray = sums / sizes
    return means
