"""Kinetics-400 class names, and where each sits in a Kinetics-710 head: data files from
OpenGVLab/VideoMAEv2's ``misc/`` (MIT licence), shipped beside this module."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).with_name("data")
K400_CLASSES = 400
K710_CLASSES = 710


@cache
def k400_labels() -> tuple[str, ...]:
    """The 400 class names, in class order."""
    names = tuple(
        line.strip() for line in (DATA / "label_map_k400.txt").read_text().splitlines() if line.strip()
    )
    assert len(names) == K400_CLASSES, f"label_map_k400.txt holds {len(names)} names"
    return names


@cache
def k710_rows_of_k400() -> tuple[int, ...]:
    """For each Kinetics-400 class, its row in a Kinetics-710 head."""
    rows = tuple(int(r) for r in json.loads((DATA / "label_710to400.json").read_text()))
    assert len(rows) == K400_CLASSES and all(0 <= r < K710_CLASSES for r in rows)
    return rows


def label_of(index: int, classes: int) -> str:
    """A class's name (Kinetics-400), or ``class N`` for a head without names."""
    return k400_labels()[index] if classes == K400_CLASSES else f"class {index}"


def top_labels(logits: np.ndarray, k: int) -> list[dict[str, object]]:
    """logits float32 classes → the ``k`` likeliest classes, best first, each with its name,
    index and softmax score."""
    scores = torch.softmax(torch.from_numpy(np.asarray(logits, np.float32)), 0)
    top = scores.topk(min(k, scores.numel()))
    return [
        {"label": label_of(int(i), scores.numel()), "index": int(i), "score": float(s)}
        for s, i in zip(top.values, top.indices, strict=True)
    ]
