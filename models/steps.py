"""Engine work written as data: a generator yields one batch of payloads (all of one batch
key) at a time, is sent their results, and returns its answer. The offline tools run it
directly (``run_steps``); the server hands each batch to its scheduler, which batches it
with other sessions' payloads. So one pipeline serves both, and never sees a queue."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

P = TypeVar("P")  # one unit of engine work (a row, a frame)
R = TypeVar("R")  # what the engine gives back for it
T = TypeVar("T")  # the pipeline's answer

Steps = Generator[list[P], list[R], T]
"""Yields payloads of one batch key at a time, is sent their results, returns T."""


def run_steps(steps: Steps[P, R, T], execute: Callable[[Sequence[P]], Sequence[R]]) -> T:
    """Run engine work directly: each batch the steps yield is one ``execute`` call."""
    try:
        payloads = next(steps)
        while True:
            payloads = steps.send(list(execute(payloads)))
    except StopIteration as done:
        return done.value
