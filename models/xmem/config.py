"""Hyper-parameters of XMem (Cheng & Schwing, "XMem: Long-Term Video Object Segmentation
with an Atkinson-Shiffrin Memory Model", ECCV 2022): the network's widths and the memory's
limits, with the paper's defaults (its ``eval.py`` settings for DAVIS / YouTube-VOS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class XMemConfigError(ValueError):
    """An unknown field or a value out of bounds; the message names it."""


@dataclass(frozen=True)
class XMemConfig:
    """Network widths (fixed by the checkpoint) and memory settings (free per session)."""

    # channels of the key (and of the selection map) the key projection gives
    key_dim: int = 64
    # channels of each object's value (the value encoder's output)
    value_dim: int = 512
    # channels of each object's sensory memory (the GRU-style hidden state)
    hidden_dim: int = 64
    # why 5: the paper's r — every 5th frame is written to working memory
    mem_every: int = 5
    # frames between deep updates of the sensory memory; -1 = on every memory frame
    deep_update_every: int = -1
    # why 30: the paper's top-k filtering of the affinity (k = 30)
    top_k: int = 30
    # whether working memory is consolidated into long-term memory when full
    enable_long_term: bool = True
    # whether long-term elements are ranked by how often reads use them (the LFU rule)
    enable_long_term_count_usage: bool = True
    # why 5: the paper's T_min — frames that always stay in working memory
    min_mid_term_frames: int = 5
    # why 10: the paper's T_max — working memory consolidates when it holds this many frames
    max_mid_term_frames: int = 10
    # why 128: the paper's P — prototypes kept per consolidation
    num_prototypes: int = 128
    # why 10000: the paper's L_max — long-term elements before the least used are dropped
    max_long_term_elements: int = 10000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        positive = (
            *("key_dim", "value_dim", "hidden_dim", "mem_every", "top_k", "num_prototypes"),
            *("min_mid_term_frames", "max_mid_term_frames", "max_long_term_elements"),
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise XMemConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        in_sync = self.deep_update_every == -1
        if not in_sync and self.deep_update_every < 1:
            raise XMemConfigError(
                f"deep_update_every must be -1 (with memory frames) or positive, got {self.deep_update_every}"
            )
        if self.min_mid_term_frames >= self.max_mid_term_frames:
            raise XMemConfigError(
                f"min_mid_term_frames ({self.min_mid_term_frames}) must be below "
                f"max_mid_term_frames ({self.max_mid_term_frames})"
            )
        if self.num_prototypes >= self.max_long_term_elements:
            raise XMemConfigError(
                f"num_prototypes ({self.num_prototypes}) must be below "
                f"max_long_term_elements ({self.max_long_term_elements})"
            )

    def replace(self, **overrides: Any) -> XMemConfig:
        """A copy with ``overrides`` applied; unknown names and bad values raise ``XMemConfigError``."""
        _check_names(overrides)
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> XMemConfig:
        """The defaults with ``values`` applied (the reference's config dict, or JSON)."""
        return cls().replace(**dict(values))


@dataclass(frozen=True)
class XMemWidths:
    """The network's widths, which a checkpoint fixes (the first fields of ``XMemConfig``)."""

    key_dim: int  # channels of the key and of the selection map
    value_dim: int  # channels of each object's value
    hidden_dim: int  # channels of each object's sensory memory

    @classmethod
    def of(cls, config: XMemConfig) -> XMemWidths:
        return cls(config.key_dim, config.value_dim, config.hidden_dim)

    def apply(self, config: XMemConfig) -> XMemConfig:
        """``config``'s memory settings with these widths: what a video over these engines runs."""
        return config.replace(key_dim=self.key_dim, value_dim=self.value_dim, hidden_dim=self.hidden_dim)


def _check_names(overrides: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(XMemConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise XMemConfigError(
            f"unknown XMem setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _check_type(name: str, value: object, annotation: object) -> None:
    """bool fields take bools; int fields take ints (and not bools, which are ints too)."""
    wants_bool = annotation in (bool, "bool")
    ok = isinstance(value, bool) if wants_bool else isinstance(value, int) and not isinstance(value, bool)
    if not ok:
        kind = "a bool" if wants_bool else "an integer"
        raise XMemConfigError(f"{name} must be {kind}, got {value!r}")
