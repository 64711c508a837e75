"""One video's XMem state as named tensors and JSON fields, and back, exactly: the three
memories (working and long-term keys, shrinkage, selection, values per group, use and life
counts; the sensory memory), the objects and groups, and the frame counters. The file
format around them is ``models/state_file.py``'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from models.xmem.config import XMemConfig
from models.xmem.inference_core import XMemState
from models.xmem.kv_store import KeyValueStore
from models.xmem.memory_manager import MemoryManager

_STORE_TENSORS = ("key", "shrinkage", "selection", "use_count", "life_count")


def state_tensors(state: XMemState) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """state → (tensors by name, JSON-able fields). Tensors are the state's own (shared, as
    nothing in a state is written in place), so this is cheap; the caller copies them out."""
    memory = state.memory
    tensors: dict[str, Tensor] = {}
    for tier, store in (("work", memory.work), ("long", memory.long)):
        tensors.update(_store_tensors(tier, store))
    if state.hidden is not None:
        tensors["hidden"] = state.hidden  # N×hidden_dim×h×w, rows as object_ids
    fields = {
        "config": dataclasses.asdict(state.config),
        "object_ids": list(state.object_ids),
        "groups": [list(group) for group in memory.groups],
        "frame_elements": memory.frame_elements,
        "consolidations": memory.consolidations,
        "long_term_removals": memory.long_term_removals,
        "value_groups": {"work": memory.work.num_groups, "long": memory.long.num_groups},
        "frame_index": state.frame_index,
        "last_memory_frame": state.last_memory_frame,
        "last_deep_update": state.last_deep_update,
        "frame_size": list(state.frame_size) if state.frame_size else None,
        "input_size": list(state.input_size) if state.input_size else None,
    }
    return tensors, fields


def state_from_tensors(
    tensors: dict[str, Tensor], fields: dict[str, Any], device: torch.device | str = "cpu"
) -> XMemState:
    """The inverse of ``state_tensors``, with the tensors moved to ``device``. Raises
    ``ValueError`` (or ``KeyError``) for fields or tensors that do not make a state."""
    config = XMemConfig(**fields["config"])
    memory = MemoryManager(config)
    groups = fields["value_groups"]
    memory.work = _store_from("work", tensors, int(groups["work"]), device)
    memory.long = _store_from("long", tensors, int(groups["long"]), device)
    memory.groups = [[int(obj) for obj in group] for group in fields["groups"]]
    memory.frame_elements = int(fields["frame_elements"])
    memory.consolidations = int(fields["consolidations"])
    memory.long_term_removals = int(fields["long_term_removals"])
    hidden = tensors.get("hidden")
    state = XMemState(
        config=config,
        memory=memory,
        object_ids=[int(obj) for obj in fields["object_ids"]],
        hidden=None if hidden is None else hidden.to(device),
        frame_index=int(fields["frame_index"]),
        last_memory_frame=int(fields["last_memory_frame"]),
        last_deep_update=int(fields["last_deep_update"]),
        frame_size=_pair(fields["frame_size"]),
        input_size=_pair(fields["input_size"]),
    )
    _check(state)
    return state


def _store_tensors(tier: str, store: KeyValueStore) -> dict[str, Tensor]:
    out = {f"{tier}.{name}": t for name in _STORE_TENSORS if (t := getattr(store, name)) is not None}
    out.update({f"{tier}.values.{g}": v for g, v in enumerate(store.values)})
    return out


def _store_from(
    tier: str, tensors: dict[str, Tensor], groups: int, device: torch.device | str
) -> KeyValueStore:
    store = KeyValueStore(count_usage=True)
    for name in _STORE_TENSORS:
        t = tensors.get(f"{tier}.{name}")
        setattr(store, name, None if t is None else t.to(device))
    store.values = [tensors[f"{tier}.values.{g}"].to(device) for g in range(groups)]
    return store


def _pair(value: list[int] | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _check(state: XMemState) -> None:
    """Shapes that agree with each other, so a bad state fails here and not mid-frame."""
    memory = state.memory
    if not set(memory.object_ids) <= set(state.object_ids):
        raise ValueError(f"memory holds objects {memory.object_ids}, the state only {state.object_ids}")
    for store in (memory.work, memory.long):
        sizes = {
            t.shape[0]
            for t in (store.key, store.shrinkage, store.use_count, store.life_count)
            if t is not None
        }
        if len(sizes) > 1:
            raise ValueError(f"memory tensors disagree on the element count: {sorted(sizes)}")
        if any(v.shape[0] > store.size for v in store.values):
            raise ValueError("a group holds values for more elements than the memory has")
    if state.hidden is not None and state.hidden.shape[0] != len(state.object_ids):
        raise ValueError(
            f"sensory memory has {state.hidden.shape[0]} rows for {len(state.object_ids)} objects"
        )
