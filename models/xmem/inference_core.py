"""XMem's streaming inference for one video: a shared set of engines, and this video's
state (sensory memory, working and long-term memory, objects, counters).

``step`` follows the reference's per-frame algorithm. Where the reference breaks on long
or changing streams, this does not: usage is always counted, long-term removal works with
objects added on different frames, ``top_k`` clamps to the memory size, and objects can be
removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines
from models.xmem.memory_manager import MemoryManager
from models.xmem.network import aggregate

# why: ImageNet statistics, which XMem's ResNet backbones were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 16  # why: f16 is the coarsest feature; frames are padded to a multiple of it


class SegmentationInputError(ValueError):
    """A frame or mask the core cannot take; the message says which and why."""


@dataclass(frozen=True)
class Padding:
    """Zeros added on each side (the reference splits them evenly, the odd one bottom/right)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def for_size(cls, height: int, width: int) -> Padding:
        extra_h, extra_w = -height % STRIDE, -width % STRIDE
        return cls(extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)

    def apply(self, x: Tensor) -> Tensor:
        return F.pad(x, (self.left, self.right, self.top, self.bottom))

    def crop(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return x[..., self.top : h - self.bottom, self.left : w - self.right]


@dataclass
class StepResult:
    """One frame's answer."""

    prob: Tensor  # (1+N)×H×W float32: background, then objects in ascending id order
    object_ids: list[int]  # the N objects, ascending
    is_memory_frame: bool

    def index_mask(self) -> np.ndarray:
        """uint8 H×W: each pixel's most probable object id, 0 for background."""
        ids = torch.tensor([0, *self.object_ids], dtype=torch.uint8)
        return ids[self.prob.argmax(0).cpu()].numpy()


@dataclass
class XMemState:
    """Everything one video owns; the engines are shared and live elsewhere."""

    config: XMemConfig
    memory: MemoryManager
    object_ids: list[int] = field(default_factory=list)  # insertion order = memory row order
    hidden: Tensor | None = None  # sensory memory, N×hidden_dim×h×w, rows as object_ids
    frame_index: int = -1  # index of the last frame stepped
    last_memory_frame: int = 0
    last_deep_update: int = 0
    frame_size: tuple[int, int] | None = None  # (H, W) of the first frame

    def snapshot(self) -> XMemState:
        """This state as it is now, to return to if a batch fails (tensors are shared)."""
        return replace(self, memory=self.memory.snapshot(), object_ids=list(self.object_ids))


@dataclass
class FrameWork:
    """One video's frame on its way through the batched stages (``models/xmem/batch.py``)."""

    core: InferenceCore  # the video it belongs to
    padding: Padding  # to the stride; cropped off the result
    image: Tensor  # float32 1×3×Hp×Wp, normalised
    given: MaskInput | None  # a mask the user gave on this frame
    is_memory_frame: bool  # its values are written to working memory
    is_deep_update: bool  # the value encoder's hidden state replaces the sensory memory
    is_normal_update: bool  # the decoder's hidden state replaces the sensory memory
    needs_segment: bool  # there are objects to predict from memory
    frame_index: int  # the video's index for this frame, taken when its batch runs
    frame_size: tuple[int, int]  # (H, W) before padding
    # filled in by the stages
    key: Tensor | None = None  # 1×64×h×w
    shrinkage: Tensor | None = None  # 1×1×h×w
    selection: Tensor | None = None  # 1×64×h×w
    f16: Tensor | None = None  # 1×1024×h×w
    f8: Tensor | None = None  # 1×512×2h×2w
    f4: Tensor | None = None  # 1×256×4h×4w
    prob: Tensor | None = None  # (1+n)×Hp×Wp, objects in state order

    @property
    def padded_hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def clear_stages(self) -> None:
        """Forget what a failed batch filled in, so the frame runs again from the start."""
        self.key = self.shrinkage = self.selection = None
        self.f16 = self.f8 = self.f4 = self.prob = None


@dataclass(frozen=True)
class MaskInput:
    """A mask given on a frame: which objects it sets, as float maps in state order."""

    given: list[int]  # ids this frame sets (others keep their prediction outside ``region``)
    maps: Tensor  # len(given)×Hp×Wp float, padded
    # Hp×Wp bool: every labelled pixel of the mask, given ids or not; the reference clears
    # all predictions there (the conformance streams pin this)
    region: Tensor


class InferenceCore:
    """One video's XMem over shared engines."""

    def __init__(self, engines: XMemEngines, config: XMemConfig | None = None) -> None:
        self.engines = engines
        self.state = self._fresh_state(config or XMemConfig())

    @property
    def config(self) -> XMemConfig:
        return self.state.config

    @property
    def device(self) -> torch.device:
        """Where the engines give their outputs, so where this video's memory lives."""
        return getattr(self.engines.encode_key, "device", torch.device("cpu"))

    def reset(self) -> None:
        """Forget everything: memory, objects, counters."""
        self.state = self._fresh_state(self.config)

    @staticmethod
    def _fresh_state(config: XMemConfig) -> XMemState:
        # why -every: the reference starts so that the first frame is a deep-update frame
        last_deep = -max(config.deep_update_every, 0)
        return XMemState(config=config, memory=MemoryManager(config), last_deep_update=last_deep)

    def step(
        self, frame: np.ndarray, mask: np.ndarray | None = None, objects: Sequence[int] | None = None
    ) -> StepResult:
        """frame: uint8 H×W×3 RGB; mask: H×W ids (0 background), taking only ``objects`` if given.

        A batch of one through ``step_batch``: a video alone and a video batched with others
        run the very same code.
        """
        from models.xmem.batch import step_batch  # why here: batch.py builds on this module

        return step_batch(self.engines, [self.begin(frame, mask, objects)])[0]

    def begin(
        self, frame: np.ndarray, mask: np.ndarray | None = None, objects: Sequence[int] | None = None
    ) -> FrameWork:
        """Check and prepare one frame, and decide what it needs (nothing runs yet).

        Changes no state: a frame refused before its batch (a full queue, a closed session)
        leaves the video as it was. Raises ``SegmentationInputError`` for a bad frame or mask.
        """
        s = self.state
        self._check_frame(frame)
        padding = Padding.for_size(*frame.shape[:2])
        image = padding.apply(normalise(frame)).to(self.device)  # 1×3×Hp×Wp
        given = self._read_mask(mask, objects, padding, frame.shape[:2]) if mask is not None else None
        index = s.frame_index + 1
        is_memory_frame = index - s.last_memory_frame >= self.config.mem_every or given is not None
        is_deep_update = self._is_deep_update(index, is_memory_frame)
        return FrameWork(
            core=self,
            padding=padding,
            image=image,
            given=given,
            is_memory_frame=is_memory_frame,
            is_deep_update=is_deep_update,
            is_normal_update=self.config.deep_update_every != -1 or not is_deep_update,
            needs_segment=index > 0 and bool(s.memory.object_ids) and not self._sets_all(given),
            frame_index=index,
            frame_size=(int(frame.shape[0]), int(frame.shape[1])),
        )

    def snapshot(self) -> XMemState:
        return self.state.snapshot()

    def restore(self, saved: XMemState) -> None:
        """Return to ``saved`` (a ``snapshot``): the frames stepped since leave no trace."""
        self.state = saved

    # --- the stages ``step_batch`` runs, between engine calls -------------------------------

    def start(self, work: FrameWork) -> None:
        """The frame's batch runs: it takes its index (and the first frame sets the size)."""
        work.clear_stages()
        self.state.frame_index = work.frame_index
        if self.state.frame_size is None:
            self.state.frame_size = work.frame_size

    def readout(self, work: FrameWork) -> Tensor:
        """Memory readout for the frame's key → n×CV×h×w, objects in state order."""
        assert work.key is not None and work.selection is not None
        return self.state.memory.match_memory(work.key[0], work.selection[0])

    def take_segment(self, work: FrameWork, logits: Tensor, hidden: Tensor) -> None:
        """logits, hidden: this frame's n rows of Segment's output."""
        if work.is_normal_update:
            self.state.hidden = hidden
        _, work.prob = aggregate(torch.sigmoid(logits), dim=0)

    def settle_prob(self, work: FrameWork) -> None:
        """Merge a given mask into the prediction; background only before any object."""
        if work.given is not None:
            work.prob = self._merge_mask(work.prob, work.given)
        if work.prob is None:
            work.prob = background_only(work.image)

    def needs_value(self, work: FrameWork) -> bool:
        return work.is_memory_frame and bool(self.state.object_ids)

    def take_value(self, work: FrameWork, value: Tensor, hidden: Tensor) -> None:
        """value, hidden: this frame's n rows of EncodeValue's output."""
        s = self.state
        assert work.key is not None and work.shrinkage is not None and work.selection is not None
        s.memory.add_memory(work.key[0], work.shrinkage[0], value, list(s.object_ids), work.selection[0])
        s.last_memory_frame = s.frame_index
        if work.is_deep_update:
            s.hidden = hidden
            s.last_deep_update = s.frame_index

    def finish(self, work: FrameWork) -> StepResult:
        assert work.prob is not None
        return self._result(work.padding.crop(work.prob), work.is_memory_frame)

    # --- conditions ------------------------------------------------------------------------

    def _is_deep_update(self, index: int, is_memory_frame: bool) -> bool:
        every = self.config.deep_update_every
        if every == -1:
            return is_memory_frame
        return index - self.state.last_deep_update >= every

    def _sets_all(self, given: MaskInput | None) -> bool:
        """A mask that sets every known object leaves nothing to predict."""
        return given is not None and set(self.state.object_ids) <= set(given.given)

    # --- masks ------------------------------------------------------------------------------

    def _merge_mask(self, prob: Tensor | None, given: MaskInput) -> Tensor:
        """The given objects take the mask; the others keep their prediction outside its labels."""
        s = self.state
        new_ids = [obj for obj in given.given if obj not in s.object_ids]
        s.object_ids.extend(new_ids)
        self._grow_hidden(len(new_ids), given.maps.shape[-2:])
        height, width = given.maps.shape[-2:]
        maps = torch.zeros(len(s.object_ids), height, width, device=given.maps.device)
        if prob is not None:
            predicted = prob[1:].clone()
            predicted[:, given.region] = 0
            maps[: predicted.shape[0]] = predicted
        for obj, layer in zip(given.given, given.maps, strict=True):
            maps[s.object_ids.index(obj)] = layer
        _, merged = aggregate(maps, dim=0)
        return merged

    def _grow_hidden(self, added: int, padded_hw: torch.Size) -> None:
        s = self.state
        h, w = padded_hw[0] // STRIDE, padded_hw[1] // STRIDE
        zeros = torch.zeros(added, self.config.hidden_dim, h, w, device=self.device)
        s.hidden = zeros if s.hidden is None else torch.cat([s.hidden, zeros.to(s.hidden)], 0)

    # --- objects ---------------------------------------------------------------------------

    def remove_object(self, obj: int) -> None:
        """Free one object's memory and sensory memory; the others keep their ids."""
        s = self.state
        if obj not in s.object_ids:
            raise SegmentationInputError(f"unknown object id {obj}; known: {sorted(s.object_ids)}")
        row = s.object_ids.index(obj)
        s.memory.remove_object(obj)
        s.object_ids.remove(obj)
        if s.hidden is not None:
            s.hidden = torch.cat([s.hidden[:row], s.hidden[row + 1 :]], 0)

    # --- inputs and outputs ----------------------------------------------------------------

    def _check_frame(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise SegmentationInputError(f"frame must be uint8 H×W×3 RGB, got {frame.dtype} {frame.shape}")
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if self.state.frame_size is not None and size != self.state.frame_size:
            raise SegmentationInputError(
                f"frame size {size} differs from the video's {self.state.frame_size}"
            )

    def _read_mask(
        self, mask: np.ndarray, objects: Sequence[int] | None, padding: Padding, frame_hw: tuple[int, ...]
    ) -> MaskInput:
        if mask.shape != tuple(frame_hw):
            raise SegmentationInputError(f"mask size {mask.shape} differs from the frame's {tuple(frame_hw)}")
        present = [int(v) for v in np.unique(mask) if v != 0]
        given = sorted(set(objects)) if objects is not None else present
        bad = [obj for obj in given if not 1 <= obj <= 255]
        if bad:
            raise SegmentationInputError(f"object ids must be 1..255, got {bad}")
        labels = torch.from_numpy(mask.astype(np.int64))
        maps = (
            torch.stack([(labels == obj).float() for obj in given]) if given else torch.zeros(0, *mask.shape)
        )
        region = padding.apply((labels != 0)[None].float())[0] > 0.5
        return MaskInput(given=given, maps=padding.apply(maps).to(self.device), region=region.to(self.device))

    def _result(self, prob: Tensor, is_memory_frame: bool) -> StepResult:
        """Reorder objects by id (state order is insertion order)."""
        ids = self.state.object_ids
        order = sorted(range(len(ids)), key=lambda i: ids[i])
        index = torch.tensor([0, *[i + 1 for i in order]], dtype=torch.int64, device=prob.device)
        return StepResult(
            prob=prob[index], object_ids=[ids[i] for i in order], is_memory_frame=is_memory_frame
        )


def normalise(frame: np.ndarray) -> Tensor:
    """frame: uint8 H×W×3 → float32 1×3×H×W, ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def background_only(image: Tensor) -> Tensor:
    """Before any object: probability 1 of background → 1×Hp×Wp."""
    return torch.ones(1, *image.shape[-2:], device=image.device)
