"""One XMem step for many videos at once: each engine called once for all their frames.

The frames (one per video, all padded to one H×W) go through
    encode_key    all frames                     → keys and features
    readout       each video's own memory        → n rows of readout per video
    segment       the frames that have objects   → logits and hidden, split back by rows
    encode_value  the memory frames              → values written to each video's memory
Videos with different object counts share a call through the engines' row layout: each
video contributes its objects as rows, and ``frame_index`` names each row's frame.
``InferenceCore.step`` is this with one video, so batched and alone are the same code.

Each work carries its video's state as data and the batch advances a copy of it, which the
results hand back; so if any stage raises, no video has changed, and each frame can run
again (alone, say) as if the batch had never been tried.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from models.xmem.export import XMemEngines
from models.xmem.inference_core import FrameWork, SegmentationInputError, StepResult


def step_batch(engines: XMemEngines, works: Sequence[FrameWork]) -> list[StepResult]:
    """Run one prepared frame of each video (``begin``) → one result each, holding the
    video's state after the frame. Every video appears at most once: its stages depend on
    its previous frame's."""
    _check_batch(works)
    for work in works:
        work.start()
    _encode_keys(engines, works)
    _segment(engines, [w for w in works if w.needs_segment])
    for work in works:
        work.settle_prob()
    _encode_values(engines, [w for w in works if w.needs_value])
    return [work.finish() for work in works]


def _check_batch(works: Sequence[FrameWork]) -> None:
    if len({w.video for w in works}) != len(works):
        raise SegmentationInputError("a batch holds at most one frame of each video")
    if len({w.padded_hw for w in works}) > 1:
        raise SegmentationInputError(
            f"frames of one batch must share a padded size, got {[w.padded_hw for w in works]}"
        )


def _encode_keys(engines: XMemEngines, works: Sequence[FrameWork]) -> None:
    """images F×3×H×W → per frame: key, shrinkage, selection, f16, f8, f4."""
    outputs = engines.encode_key(torch.cat([w.image for w in works]))
    for i, work in enumerate(works):
        work.key, work.shrinkage, work.selection, work.f16, work.f8, work.f4 = (o[i : i + 1] for o in outputs)


def _frame_rows(counts: Sequence[int]) -> Tensor:
    """int64 R: row r belongs to frame ``frame_rows[r]`` of the batch."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.int64))


def _split(x: Tensor, counts: Sequence[int]) -> list[Tensor]:
    return list(torch.split(x, list(counts)))


def _cat(tensors: Sequence[Tensor | None]) -> Tensor:
    present = [t for t in tensors if t is not None]
    assert len(present) == len(tensors), "a stage ran before its inputs were ready"
    return torch.cat(present)


def _segment(engines: XMemEngines, works: Sequence[FrameWork]) -> None:
    """Each video's readout, then one decoder call for all of them."""
    if not works:
        return
    readouts = [w.readout() for w in works]  # n_i×CV×h×w each
    counts = [r.shape[0] for r in readouts]
    hidden = [w.state.hidden for w in works]  # n_i×k×h×w each
    logits, new_hidden = engines.segment(
        _cat([w.f16 for w in works]),
        _cat([w.f8 for w in works]),
        _cat([w.f4 for w in works]),
        _frame_rows(counts),
        torch.cat(readouts),
        _cat(hidden),
    )
    for work, part_logits, part_hidden in zip(
        works, _split(logits, counts), _split(new_hidden, counts), strict=True
    ):
        work.take_segment(part_logits, part_hidden)


def _encode_values(engines: XMemEngines, works: Sequence[FrameWork]) -> None:
    """One value-encoder call for every memory frame's objects."""
    if not works:
        return
    masks = []  # n_i×Hp×Wp each: the objects' probabilities, state order
    for work in works:
        assert work.prob is not None
        masks.append(work.prob[1:])
    counts = [m.shape[0] for m in masks]
    others = [m.sum(0, keepdim=True) - m for m in masks]
    value, new_hidden = engines.encode_value(
        torch.cat([w.image for w in works]),
        _cat([w.f16 for w in works]),
        _frame_rows(counts),
        _cat([w.state.hidden for w in works]),
        torch.cat(masks),
        torch.cat(others),
    )
    for work, part_value, part_hidden in zip(
        works, _split(value, counts), _split(new_hidden, counts), strict=True
    ):
        work.take_value(part_value, part_hidden)
