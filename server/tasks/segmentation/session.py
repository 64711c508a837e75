"""The state of one segmentation stream: its own XMem state (memory, objects) over the
shared engines, and what the user asked to change on the next frame; and the body that
opens one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.xmem.config import XMemConfig
from models.xmem.inference_core import XMemState
from server.sessions.store import SessionCore

TASK = "segment"
MaskFormat = Literal["png", "rle"]
XMEM_DEFAULTS = XMemConfig()
DEFAULT_OBJECTS = 4  # why: each object adds 512 floats to every memory element; ask for more
DEFAULT_SIDE = 480  # why: XMem's evaluation size, for reserving before the first frame


class SegmentationSessionCreate(BaseModel):
    """A live segmentation stream. Memory settings default to the paper's and are bounded
    so that one session cannot take the whole budget by asking."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["segment"]
    model: str | None = Field(None, description="served XMem model (default: the first configured)")
    processing_size: int | None = Field(
        DEFAULT_SIDE,
        ge=64,
        le=2160,
        description="frames' shorter side is resized to this (XMem's 480); null: as given",
    )
    max_objects: int | None = Field(
        None,
        ge=1,
        le=255,
        description=f"objects at once (default {DEFAULT_OBJECTS}, at most VIDSERVE_MAX_OBJECTS)",
    )
    output_format: Literal["png", "rle"] = Field("png", description="index PNG, or COCO RLE per object")
    probabilities: bool = Field(False, description="also return each object's probability as an 8-bit PNG")
    mem_every: int = Field(XMEM_DEFAULTS.mem_every, ge=1, le=100)
    top_k: int = Field(XMEM_DEFAULTS.top_k, ge=1, le=256)
    min_mid_term_frames: int = Field(XMEM_DEFAULTS.min_mid_term_frames, ge=1, le=50, description="T_min")
    max_mid_term_frames: int = Field(XMEM_DEFAULTS.max_mid_term_frames, ge=2, le=100, description="T_max")
    num_prototypes: int = Field(XMEM_DEFAULTS.num_prototypes, ge=1, le=1024)
    max_long_term_elements: int = Field(XMEM_DEFAULTS.max_long_term_elements, ge=16, le=100_000)

    def xmem_config(self) -> XMemConfig:
        return XMEM_DEFAULTS.replace(
            mem_every=self.mem_every,
            top_k=self.top_k,
            min_mid_term_frames=self.min_mid_term_frames,
            max_mid_term_frames=self.max_mid_term_frames,
            num_prototypes=self.num_prototypes,
            max_long_term_elements=self.max_long_term_elements,
        )


@dataclass
class PendingMask:
    """A mask for the next frame: ``objects`` take it, the others keep their prediction."""

    mask: np.ndarray  # uint8 H×W ids at the input size, 0 background
    objects: list[int] | None  # ids it sets; None: every id present in it


@dataclass
class SegmentationSession:
    """One stream of frames (a live session, or a clip job's): settings, its XMem state,
    pending controls, counters."""

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
    # why a lock: REST steps and a websocket may both drive a session; frames go one at a time
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: str = field(default=TASK, init=False)

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
