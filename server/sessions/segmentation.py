"""The state of one segmentation stream: its own XMem core (memory, objects) over the
shared engines, and what the user asked to change on the next frame."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from models.xmem.config import XMemConfig
from models.xmem.inference_core import XMemState
from server.sessions.store import SessionCore

MaskFormat = Literal["png", "rle"]


@dataclass
class PendingMask:
    """A mask for the next frame: ``objects`` take it, the others keep their prediction."""

    mask: np.ndarray  # uint8 H×W ids at the input size, 0 background
    objects: list[int] | None  # ids it sets; None: every id present in it


@dataclass
class SegmentationSession:
    """One live stream: settings, its XMem core, pending controls, counters."""

    core: SessionCore  # id, life-cycle and counters every task shares
    model: str  # registry name of the XMem model
    xmem: XMemState  # this video's memories, objects and counters; the engines are shared
    processing_size: int | None  # shorter side frames are resized to (None: as given)
    max_objects: int  # objects the session may track at once
    output_format: MaskFormat  # index PNG or COCO RLE per object
    probabilities: bool  # also return each object's probability as an 8-bit PNG
    reserved_bytes: int  # memory budget held for this session (its worst case)
    size: tuple[int, int] | None = None  # H, W of the input frames, fixed by the first
    pending_mask: PendingMask | None = None  # applied with the next frame
    pending_removals: list[int] = field(default_factory=list)  # applied before the next frame
    pending_reset: bool = False  # forget everything before the next frame
    last_index: int | None = None  # the last frame_index received, good or bad
    # why a lock: REST steps and a websocket may both drive a session; frames go one at a time
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: str = field(default="segment", init=False)

    @property
    def id(self) -> str:
        return self.core.id

    @property
    def config(self) -> XMemConfig:
        return self.xmem.config

    def memory_bytes(self) -> dict[str, int]:
        """Bytes by tier: working, long-term and sensory memory."""
        state = self.xmem
        tiers = state.memory.nbytes()
        hidden = state.hidden
        tiers["sensory"] = 0 if hidden is None else hidden.numel() * hidden.element_size()
        return tiers

    def memory_elements(self) -> dict[str, int]:
        memory = self.xmem.memory
        return {"working": memory.work.size, "long_term": memory.long.size}

    def public(self) -> dict[str, object]:
        """What GET /v1/sessions/{id} shows."""
        config = self.config
        return {
            **self.core.public(),
            "task": self.task,
            "model": self.model,
            "objects": sorted(self.xmem.object_ids),
            "frames_processed": self.xmem.frame_index + 1,
            "frame_size": list(self.size) if self.size else None,
            "processing_size": self.processing_size,
            "max_objects": self.max_objects,
            "output_format": self.output_format,
            "probabilities": self.probabilities,
            "memory": {
                "elements": self.memory_elements(),
                "bytes": self.memory_bytes(),
                "reserved_bytes": self.reserved_bytes,
                "consolidations": self.xmem.memory.consolidations,
                "long_term_removals": self.xmem.memory.long_term_removals,
            },
            "settings": {
                "mem_every": config.mem_every,
                "top_k": config.top_k,
                "min_mid_term_frames": config.min_mid_term_frames,
                "max_mid_term_frames": config.max_mid_term_frames,
                "num_prototypes": config.num_prototypes,
                "max_long_term_elements": config.max_long_term_elements,
            },
        }
