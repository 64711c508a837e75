"""XMem's streaming inference: one video's state as data (sensory memory, working and
long-term memory, objects, counters), and the frame's way through the shared engines.

A frame is ``begin``-ed against the video's state into a ``FrameWork``: the data one batch
needs (``models/xmem/batch.py`` runs many videos' works together). The batch advances a
copy of that state and returns it in the ``StepResult``; the caller adopts it to go on. So
the engines never hold a video, a failed batch leaves nothing to undo, and a video can be
closed while its frame is still on the engine.

``step`` follows the reference's per-frame algorithm. Where the reference breaks on long
or changing streams, this does not: usage is always counted, long-term removal works with
objects added on different frames, ``top_k`` clamps to the memory size, and objects can be
removed. Frames may be resized to a processing size and their masks brought back, as
XMem's evaluation does (``processing_hw``, ``at_input_size``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from models.xmem.config import XMemConfig
from models.xmem.export import XMemEngines
from models.xmem.memory_manager import MemoryManager
from models.xmem.network import STRIDE, aggregate, normalize

_videos = itertools.count()


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
class XMemState:
    """Everything one video owns; the engines are shared and live elsewhere. Nothing here is
    written in place once a frame has run on it: ``snapshot`` shares the tensors."""

    config: XMemConfig  # memory settings, with the checkpoint's widths
    memory: MemoryManager
    object_ids: list[int] = field(default_factory=list)  # insertion order = memory row order
    hidden: Tensor | None = None  # sensory memory, N×hidden_dim×h×w, rows as object_ids
    frame_index: int = -1  # index of the last frame stepped
    last_memory_frame: int = 0
    last_deep_update: int = 0
    frame_size: tuple[int, int] | None = None  # (H, W) of the first frame, as processed
    input_size: tuple[int, int] | None = None  # (H, W) of the first frame, as given

    @classmethod
    def fresh(cls, config: XMemConfig) -> XMemState:
        """A video before its first frame."""
        # why -every: the reference starts so that the first frame is a deep-update frame
        last_deep = -max(config.deep_update_every, 0)
        return cls(config=config, memory=MemoryManager(config), last_deep_update=last_deep)

    def snapshot(self) -> XMemState:
        """This state as it is now, to change without touching it (tensors are shared)."""
        return replace(self, memory=self.memory.snapshot(), object_ids=list(self.object_ids))

    def without_object(self, obj: int) -> XMemState:
        """This video with one object's memory and sensory memory freed; the others keep their ids."""
        if obj not in self.object_ids:
            raise SegmentationInputError(f"unknown object id {obj}; known: {sorted(self.object_ids)}")
        state = self.snapshot()
        row = state.object_ids.index(obj)
        state.memory.remove_object(obj)
        state.object_ids.remove(obj)
        if state.hidden is not None:
            state.hidden = torch.cat([state.hidden[:row], state.hidden[row + 1 :]], 0)
        return state


@dataclass
class StepResult:
    """One frame's answer, and the video's state after it."""

    prob: Tensor  # (1+N)×H×W float32: background, then objects in ascending id order
    object_ids: list[int]  # the N objects, ascending
    is_memory_frame: bool
    state: XMemState  # the video after this frame: adopt it to go on

    def index_mask(self) -> np.ndarray:
        """uint8 H×W: each pixel's most probable object id, 0 for background."""
        ids = torch.tensor([0, *self.object_ids], dtype=torch.uint8)
        return ids[self.prob.argmax(0).cpu()].numpy()


@dataclass(frozen=True)
class MaskInput:
    """A mask given on a frame: which objects it sets, as float maps in state order."""

    given: list[int]  # ids this frame sets (the others keep their prediction outside the mask)
    maps: Tensor  # len(given)×Hp×Wp float, padded
    # Hp×Wp int64: the mask's ids, padded with 0. Predictions are cleared where it names a
    # tracked or a given id, as the reference clears them where its one-hot over those ids
    # is set; pixels of any other id are unlabelled (issue 14)
    labels: Tensor

    def region(self, known: Sequence[int]) -> Tensor:
        """Hp×Wp bool: the pixels the mask labels with one of ``known`` (tracked or given)."""
        return torch.isin(
            self.labels, torch.tensor(list(known), dtype=torch.int64, device=self.labels.device)
        )


@dataclass
class FrameWork:
    """One video's frame on its way through the batched stages (``models/xmem/batch.py``):
    data only. The stages work on ``state``, a copy of ``base`` made when the batch starts,
    so a batch that fails (and the frame that runs again alone) starts from ``base``."""

    video: str  # which video it belongs to: a batch holds one frame of each
    base: XMemState  # the video before this frame
    device: torch.device  # where the engines give their outputs, so where memory lives
    padding: Padding  # to the stride; cropped off the result
    image: Tensor  # float32 1×3×Hp×Wp, normalised
    given: MaskInput | None  # a mask the user gave on this frame
    is_memory_frame: bool  # its values are written to working memory
    is_deep_update: bool  # the value encoder's hidden state replaces the sensory memory
    is_normal_update: bool  # the decoder's hidden state replaces the sensory memory
    needs_segment: bool  # there are objects to predict from memory
    frame_index: int  # the video's index for this frame
    frame_size: tuple[int, int]  # (H, W) as processed, before padding
    input_size: tuple[int, int]  # (H, W) as given
    # filled in by the stages
    state: XMemState = field(init=False)
    key: Tensor | None = None  # 1×64×h×w
    shrinkage: Tensor | None = None  # 1×1×h×w
    selection: Tensor | None = None  # 1×64×h×w
    f16: Tensor | None = None  # 1×1024×h×w
    f8: Tensor | None = None  # 1×512×2h×2w
    f4: Tensor | None = None  # 1×256×4h×4w
    prob: Tensor | None = None  # (1+n)×Hp×Wp, objects in state order

    def __post_init__(self) -> None:
        self.state = self.base

    @property
    def padded_hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    @property
    def config(self) -> XMemConfig:
        return self.base.config

    # --- the stages ``step_batch`` runs, between engine calls -------------------------------

    def start(self) -> None:
        """The batch runs: work on a fresh copy of the video, which takes this frame's index."""
        self.key = self.shrinkage = self.selection = None
        self.f16 = self.f8 = self.f4 = self.prob = None
        self.state = self.base.snapshot()
        self.state.frame_index = self.frame_index
        if self.state.frame_size is None:
            self.state.frame_size, self.state.input_size = self.frame_size, self.input_size

    def readout(self) -> Tensor:
        """Memory readout for the frame's key → n×CV×h×w, objects in state order."""
        assert self.key is not None and self.selection is not None
        return self.state.memory.match_memory(self.key[0], self.selection[0])

    def take_segment(self, logits: Tensor, hidden: Tensor) -> None:
        """logits, hidden: this frame's n rows of Segment's output."""
        if self.is_normal_update:
            self.state.hidden = hidden
        _, self.prob = aggregate(torch.sigmoid(logits), dim=0)

    def settle_prob(self) -> None:
        """Merge a given mask into the prediction; background only before any object."""
        if self.given is not None:
            self.prob = self._merge_mask(self.prob, self.given)
        if self.prob is None:
            self.prob = torch.ones(1, *self.image.shape[-2:], device=self.image.device)

    @property
    def needs_value(self) -> bool:
        return self.is_memory_frame and bool(self.state.object_ids)

    def take_value(self, value: Tensor, hidden: Tensor) -> None:
        """value, hidden: this frame's n rows of EncodeValue's output."""
        s = self.state
        assert self.key is not None and self.shrinkage is not None and self.selection is not None
        s.memory.add_memory(self.key[0], self.shrinkage[0], value, list(s.object_ids), self.selection[0])
        s.last_memory_frame = s.frame_index
        if self.is_deep_update:
            s.hidden = hidden
            s.last_deep_update = s.frame_index

    def finish(self) -> StepResult:
        """The frame's probabilities at its processed size, objects by id."""
        assert self.prob is not None
        prob = self.padding.crop(self.prob)
        ids = self.state.object_ids
        order = sorted(range(len(ids)), key=lambda i: ids[i])
        index = torch.tensor([0, *[i + 1 for i in order]], dtype=torch.int64, device=prob.device)
        return StepResult(prob[index], [ids[i] for i in order], self.is_memory_frame, self.state)

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
            predicted[:, given.region(s.object_ids)] = 0
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


# --- a frame in ------------------------------------------------------------------------------


def processing_hw(height: int, width: int, size: int | None) -> tuple[int, int]:
    """XMem's evaluation resize: the shorter side becomes ``size`` (None: as given)."""
    if size is None:
        return height, width
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def begin(
    state: XMemState,
    frame: np.ndarray,
    mask: np.ndarray | None = None,
    objects: Sequence[int] | None = None,
    *,
    video: str,
    device: torch.device,
    processing_size: int | None = None,
) -> FrameWork:
    """Check and prepare one frame of a video, and decide what it needs (nothing runs yet).

    frame: uint8 H×W×3 RGB; mask: uint8 H×W ids (0 background), setting only ``objects`` if
    given. Both are resized to ``processing_size`` first. Changes no state: a frame refused
    before its batch (a full queue, a closed session) leaves the video as it was. Raises
    ``SegmentationInputError`` for a bad frame or mask.
    """
    _check_frame(state, frame)
    input_size = (int(frame.shape[0]), int(frame.shape[1]))
    if mask is not None and mask.shape != input_size:
        raise SegmentationInputError(f"mask size {mask.shape} differs from the frame's {input_size}")
    frame, mask = _resized(frame, mask, processing_hw(*input_size, processing_size))
    padding = Padding.for_size(*frame.shape[:2])
    image = padding.apply(normalise(frame)).to(device)  # 1×3×Hp×Wp
    given = _read_mask(mask, objects, padding, device) if mask is not None else None
    index = state.frame_index + 1
    is_memory_frame = index - state.last_memory_frame >= state.config.mem_every or given is not None
    is_deep_update = _is_deep_update(state, index, is_memory_frame)
    sets_all = given is not None and set(state.object_ids) <= set(given.given)
    return FrameWork(
        video=video,
        base=state,
        device=device,
        padding=padding,
        image=image,
        given=given,
        is_memory_frame=is_memory_frame,
        is_deep_update=is_deep_update,
        is_normal_update=state.config.deep_update_every != -1 or not is_deep_update,
        needs_segment=index > 0 and bool(state.memory.object_ids) and not sets_all,
        frame_index=index,
        frame_size=(int(frame.shape[0]), int(frame.shape[1])),
        input_size=input_size,
    )


def at_input_size(result: StepResult, height: int, width: int) -> StepResult:
    """A result at its processed size → at H×W, bilinear as XMem's evaluation does."""
    if tuple(result.prob.shape[-2:]) == (height, width):
        return result
    prob = F.interpolate(result.prob[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return replace(result, prob=prob)


def _resized(
    frame: np.ndarray, mask: np.ndarray | None, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    if hw == frame.shape[:2]:
        return frame, mask
    size = (hw[1], hw[0])
    frame = np.array(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
    if mask is not None:
        mask = np.array(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return frame, mask


def _is_deep_update(state: XMemState, index: int, is_memory_frame: bool) -> bool:
    every = state.config.deep_update_every
    if every == -1:
        return is_memory_frame
    return index - state.last_deep_update >= every


def _check_frame(state: XMemState, frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise SegmentationInputError(f"frame must be uint8 H×W×3 RGB, got {frame.dtype} {frame.shape}")
    size = (int(frame.shape[0]), int(frame.shape[1]))
    if state.input_size is not None and size != state.input_size:
        raise SegmentationInputError(f"frame size {size} differs from the video's {state.input_size}")


def _read_mask(
    mask: np.ndarray, objects: Sequence[int] | None, padding: Padding, device: torch.device
) -> MaskInput:
    present = [int(v) for v in np.unique(mask) if v != 0]
    given = sorted(set(objects)) if objects is not None else present
    bad = [obj for obj in given if not 1 <= obj <= 255]
    if bad:
        raise SegmentationInputError(f"object ids must be 1..255, got {bad}")
    labels = torch.from_numpy(mask.astype(np.int64))
    maps = torch.stack([(labels == obj).float() for obj in given]) if given else torch.zeros(0, *mask.shape)
    padded = padding.apply(labels[None])[0]  # zeros outside: unlabelled
    return MaskInput(given=given, maps=padding.apply(maps).to(device), labels=padded.to(device))


def normalise(frame: np.ndarray) -> Tensor:
    """frame: uint8 H×W×3 → float32 1×3×H×W, ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255
    return normalize(x)[None]


# --- one video, offline ----------------------------------------------------------------------


class InferenceCore:
    """One video's XMem over shared engines, stepped directly (no server): its state, and
    the processing size its frames are resized to."""

    def __init__(
        self, engines: XMemEngines, config: XMemConfig | None = None, processing_size: int | None = None
    ) -> None:
        self.engines = engines
        self.processing_size = processing_size
        self.video = f"video-{next(_videos)}"
        self.state = XMemState.fresh(engines.widths.apply(config or XMemConfig()))

    @property
    def config(self) -> XMemConfig:
        return self.state.config

    @property
    def device(self) -> torch.device:
        """Where the engines give their outputs, so where this video's memory lives."""
        return getattr(self.engines.encode_key, "device", torch.device("cpu"))

    def reset(self) -> None:
        """Forget everything: memory, objects, counters."""
        self.state = XMemState.fresh(self.config)

    def begin(
        self, frame: np.ndarray, mask: np.ndarray | None = None, objects: Sequence[int] | None = None
    ) -> FrameWork:
        """This video's next frame as work for a batch (``begin``); ``adopt`` its result."""
        return begin(
            self.state,
            frame,
            mask,
            objects,
            video=self.video,
            device=self.device,
            processing_size=self.processing_size,
        )

    def adopt(self, result: StepResult) -> StepResult:
        """Go on from a frame's result; returns it at the input size."""
        self.state = result.state
        return at_input_size(result, *result.state.input_size or result.prob.shape[-2:])

    def step(
        self, frame: np.ndarray, mask: np.ndarray | None = None, objects: Sequence[int] | None = None
    ) -> StepResult:
        """frame: uint8 H×W×3 RGB; mask: H×W ids (0 background), taking only ``objects`` if given.

        A batch of one through ``step_batch``: a video alone and a video batched with others
        run the very same code.
        """
        from models.xmem.batch import step_batch  # why here: batch.py builds on this module

        return self.adopt(step_batch(self.engines, [self.begin(frame, mask, objects)])[0])

    def remove_object(self, obj: int) -> None:
        """Free one object's memory and sensory memory; the others keep their ids."""
        self.state = self.state.without_object(obj)
