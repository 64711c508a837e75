"""Retiming plans (models/timeline.py): where each output frame sits and at which timestep,
for integer factors, target rates, variable-rate sources and trims; and the deduplicator."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from models.timeline import Deduplicator, FactorTimeline, PairPlan, RateTimeline, Timeline, rate_of


def run(timeline: Timeline, times: list[float], end_s: float) -> tuple[list[PairPlan], list[float]]:
    plans, previous = [], None
    for time_s in times:
        plans.append(timeline.pair(previous, time_s))
        previous = time_s
    return plans, timeline.tail(times[-1], end_s)


def output_times(plans: list[PairPlan], tail: list[float]) -> list[float]:
    return [t for p in plans for t in (*p.between_s, *p.this_s)] + tail


def test_24_to_60_puts_each_frame_at_its_instant() -> None:
    times = [i / 24 for i in range(48)]  # 2 s
    plans, tail = run(RateTimeline(Fraction(60)), times, end_s=2.0)
    out = output_times(plans, tail)
    assert out == pytest.approx([k / 60 for k in range(120)])
    # instant k/60 lies between source frames floor(k·24/60) and the next, at the fraction past it
    for index, plan in enumerate(plans[1:], start=1):
        for timestep, out_s in zip(plan.timesteps, plan.between_s, strict=True):
            assert 0 < timestep < 1
            assert out_s == pytest.approx((index - 1 + timestep) / 24)
    # source frames on an instant (every second one: 2/24 = 5/60) are shown as they are
    assert [len(p.this_s) for p in plans[:4]] == [1, 0, 1, 0]
    assert plans[1].timesteps == pytest.approx([0.4, 0.8])  # 1/60 and 2/60 s into a 1/24 s pair


def test_a_variable_rate_source_gets_constant_output() -> None:
    """tree.avi's first frames: gaps of 5 to 11 nominal frames."""
    times = [0.0, 11 / 15, 17 / 15, 24 / 15, 31 / 15]
    plans, tail = run(RateTimeline(Fraction(30)), times, end_s=37 / 15)
    out = output_times(plans, tail)
    assert out == pytest.approx([k / 30 for k in range(74)])
    assert len(plans[1].timesteps) == 21 and plans[1].this_s == pytest.approx([22 / 30])
    assert len(tail) == 11  # the last frame held over its own 6/15 s


def test_a_trim_starts_the_output_at_zero() -> None:
    times = [0.52 + i / 25 for i in range(10)]
    plans, tail = run(RateTimeline(Fraction(50), origin=0.5), times, end_s=0.9)
    out = output_times(plans, tail)
    assert out == pytest.approx([k / 50 for k in range(20)])
    assert plans[0].this_s == pytest.approx([0.0, 0.02])  # instants before the first frame show it


def test_a_lower_rate_skips_frames_but_keeps_every_pair() -> None:
    times = [i / 60 for i in range(60)]
    plans, _ = run(RateTimeline(Fraction(24)), times, end_s=1.0)
    assert sum(p.outputs for p in plans) == 24
    assert sum(1 for p in plans if p.outputs == 0) > 0  # those frames only start the next pair


def test_factor_keeps_originals_at_their_times() -> None:
    times = [0.0, 0.04, 0.1]  # variable: stays variable
    plans, tail = run(FactorTimeline(3, Fraction(25)), times, end_s=0.14)
    assert [p.this_s for p in plans] == [[0.0], [0.04], [0.1]]
    assert plans[2].timesteps == pytest.approx([1 / 3, 2 / 3])
    assert plans[2].between_s == pytest.approx([0.06, 0.08])
    assert tail == pytest.approx([0.1 + 1 / 75, 0.1 + 2 / 75])  # N× the frames in all


@pytest.mark.parametrize(
    ("text", "rate"),
    [("60", Fraction(60)), ("59.94", Fraction(60000, 1001)), ("23.976", Fraction(24000, 1001)),
     ("60000/1001", Fraction(60000, 1001)), ("12.5", Fraction(25, 2))],
)  # fmt: skip
def test_rates_as_users_write_them(text: str, rate: Fraction) -> None:
    assert rate_of(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-24", "1/0", ""])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="frame rate"):
        rate_of(text)


def frame(seed: int, noise: float = 0.0) -> np.ndarray:
    base = np.random.default_rng(seed).integers(0, 256, (64, 96, 3)).astype(np.float32)
    jitter = np.random.default_rng(seed + 100).normal(0, noise, base.shape) if noise else 0.0
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


def test_dedup_drops_repeats_and_keeps_motion() -> None:
    dedup = Deduplicator()
    still = frame(0)
    assert not dedup.is_repeat(still)
    assert dedup.is_repeat(still.copy())
    assert dedup.is_repeat(frame(0, noise=2.0))  # an encoder's noise on a repeated frame
    cursor = still.copy()
    cursor[8:16, 8:16] = 255 - cursor[8:16, 8:16]  # one 8×8 block changes: a moving cursor
    assert not dedup.is_repeat(cursor)
    assert not dedup.is_repeat(frame(1))  # another picture
    assert dedup.dropped == 2


def test_dedup_keeps_a_frame_of_a_long_still() -> None:
    dedup = Deduplicator(max_run=2)
    still = frame(3)
    kept = [not dedup.is_repeat(still) for _ in range(7)]
    assert kept == [True, False, False, True, False, False, True]


def test_dedup_threshold_zero_drops_only_exact_repeats() -> None:
    dedup = Deduplicator(hi=0.0)
    assert not dedup.is_repeat(frame(0))
    assert not dedup.is_repeat(frame(0, noise=2.0))
    assert dedup.is_repeat(frame(0, noise=2.0))
