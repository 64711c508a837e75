"""XMem's working and long-term memories for one video, and the readout over both.

Working memory takes every memory frame. When it reaches T_max frames, the frames between
the first (kept for good) and the newest T_min are consolidated: the most used elements
become prototypes, whose values are potentiated (each prototype reads out over all the
candidates), and move to long-term memory. Long-term memory drops its least used elements
when it reaches its cap. Both are bounded, so a session can run for hours.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.xmem.config import XMemConfig
from models.xmem.kv_store import KeyValueStore
from models.xmem.network import STRIDE
from models.xmem.readout import gather_readout, query_chunks, similarity, topk_softmax, usage_of

FLOAT_BYTES = 4
USAGE_FLOATS = 2  # why: each memory element keeps a usage and a life count (the LFU rule)


def memory_bound_bytes(config: XMemConfig, frame_hw: tuple[int, int], objects: int) -> int:
    """The most one video's memory can hold, for frames of ``frame_hw`` (as processed) and
    ``objects`` objects: working memory just before it consolidates, a full long-term
    memory, and the sensory memory, all float32, at ``config``'s widths (the checkpoint's)."""
    positions = -(-frame_hw[0] // STRIDE) * -(-frame_hw[1] // STRIDE)  # memory elements per frame
    per_element = FLOAT_BYTES * (2 * config.key_dim + 1 + USAGE_FLOATS + config.value_dim * objects)
    elements = (config.max_mid_term_frames + 1) * positions
    if config.enable_long_term:
        elements += config.max_long_term_elements + config.num_prototypes
    sensory = FLOAT_BYTES * objects * config.hidden_dim * positions
    return elements * per_element + sensory


@dataclass
class Candidates:
    """Which slice of memory one group reads: the last ``long_size`` long-term and the last
    ``work_size`` working elements, with their values stacked long-term first."""

    long_size: int
    work_size: int
    values: Tensor  # (long_size + work_size)×n_g×CV


@dataclass
class MemoryManager:
    """The three memories' long-lived parts (keys and values; the hidden state lives with the
    objects in ``InferenceCore``) and the object groups that index them."""

    config: XMemConfig
    work: KeyValueStore = field(init=False)
    long: KeyValueStore = field(init=False)
    groups: list[list[int]] = field(default_factory=list)  # object ids per group, in value-row order
    frame_elements: int = 0  # h·w: memory elements per frame
    consolidations: int = 0
    long_term_removals: int = 0

    def __post_init__(self) -> None:
        # why always counted: without usage the reference cannot consolidate and raises at
        # about frame 2000; a session has no known end
        self.work = KeyValueStore(count_usage=True)
        self.long = KeyValueStore(count_usage=True)

    @property
    def object_ids(self) -> list[int]:
        """Objects with memory, in value-row order (group by group)."""
        return [obj for group in self.groups for obj in group]

    def snapshot(self) -> MemoryManager:
        """This memory as it is now, cheaply: tensors are shared, as every write rebinds them."""
        copied = copy.copy(self)
        copied.work, copied.long = self.work.snapshot(), self.long.snapshot()
        copied.groups = [list(group) for group in self.groups]
        return copied

    def nbytes(self) -> dict[str, int]:
        return {"working": self.work.nbytes(), "long_term": self.long.nbytes()}

    # --- readout ---------------------------------------------------------------------------

    def match_memory(self, query_key: Tensor, query_selection: Tensor) -> Tensor:
        """query_key, query_selection: CK×h×w → readout n×CV×h×w, objects in ``object_ids`` order."""
        h, w = query_key.shape[-2:]
        qk, qe = query_key.flatten(1), query_selection.flatten(1)  # CK×Q
        use_long = self.long.engaged()
        mem_key, mem_shrinkage = self._all_keys(use_long)
        readouts: list[list[Tensor]] = [[] for _ in self.groups]
        usage = torch.zeros(mem_key.shape[0], dtype=qk.dtype, device=qk.device)
        for start, end in query_chunks(mem_key.shape[0], qk.shape[1]):
            sim = similarity(mem_key, mem_shrinkage, qk[:, start:end], qe[:, start:end])  # N×q
            top = topk_softmax(sim, self.config.top_k)
            usage += usage_of(*top, sim.shape[0])
            for g in range(len(self.groups)):
                readouts[g].append(self._read_group(g, sim, use_long, top))
        self._record_usage(usage, use_long)
        out = torch.cat([torch.cat(parts, -1) for parts in readouts], 0)  # n×CV×Q
        return out.view(out.shape[0], out.shape[1], h, w)

    def _all_keys(self, use_long: bool) -> tuple[Tensor, Tensor]:
        assert self.work.key is not None and self.work.shrinkage is not None
        if not use_long:
            return self.work.key, self.work.shrinkage
        assert self.long.key is not None and self.long.shrinkage is not None
        return torch.cat([self.long.key, self.work.key], 0), torch.cat(
            [self.long.shrinkage, self.work.shrinkage], 0
        )

    def _candidates(self, group: int, use_long: bool) -> Candidates:
        work_values = self.work.values[group]
        if not (use_long and group < self.long.num_groups):
            return Candidates(0, work_values.shape[0], work_values)
        long_values = self.long.values[group]
        return Candidates(
            long_values.shape[0], work_values.shape[0], torch.cat([long_values, work_values], 0)
        )

    def _read_group(self, group: int, sim: Tensor, use_long: bool, top: tuple[Tensor, Tensor]) -> Tensor:
        """One group's readout for a block of queries: softmax over the elements it has values
        for. ``top``: the top-k softmax over all elements, reused when the group has values for
        all of them (always with one group; the first group otherwise): no second top-k, and
        no copy of the similarity (issue 16: about 20 ms a frame at 480p)."""
        cand = self._candidates(group, use_long)
        long_total = self.long.size if use_long else 0
        reads_everything = cand.long_size == long_total and cand.work_size == sim.shape[0] - long_total
        if reads_everything:
            return gather_readout(cand.values, *top)  # n_g×CV×q
        work = sim[sim.shape[0] - cand.work_size :]
        rows = torch.cat([sim[long_total - cand.long_size : long_total], work], 0) if cand.long_size else work
        weights, indices = topk_softmax(rows, self.config.top_k)
        return gather_readout(cand.values, weights, indices)  # n_g×CV×q

    def _record_usage(self, usage: Tensor, use_long: bool) -> None:
        """Usage comes from the softmax over all elements, as the reference's first group gives it."""
        long_total = self.long.size if use_long else 0
        self.work.update_usage(usage[long_total:])
        if use_long:
            self.long.update_usage(usage[:long_total])

    # --- writing ---------------------------------------------------------------------------

    def add_memory(
        self, key: Tensor, shrinkage: Tensor, value: Tensor, object_ids: list[int], selection: Tensor
    ) -> None:
        """key: CK×h×w, shrinkage: 1×h×w, selection: CK×h×w, value: n×CV×h×w for ``object_ids``."""
        self.frame_elements = key.shape[-2] * key.shape[-1]
        by_id = dict(zip(object_ids, value.flatten(2).permute(2, 0, 1).unbind(1), strict=True))  # id → Q×CV
        known = set(self.object_ids)
        new_ids = [obj for obj in object_ids if obj not in known]
        if new_ids:
            self.groups.append(new_ids)
        values: list[Tensor | None] = [torch.stack([by_id[obj] for obj in group], 1) for group in self.groups]
        self.work.add(key.flatten(1).t(), shrinkage.flatten(1).t(), selection.flatten(1).t(), values)
        if self._work_is_full():
            cap = self.config.max_long_term_elements - self.config.num_prototypes
            if self.long.size >= cap and self.long.remove_least_used(cap):
                self.long_term_removals += 1
            self._consolidate()

    def _work_is_full(self) -> bool:
        return (
            self.config.enable_long_term
            and self.work.size >= self.config.max_mid_term_frames * self.frame_elements
        )

    def _consolidate(self) -> None:
        """Working frames between the first and the newest T_min become long-term prototypes."""
        hw = self.frame_elements
        keep_newest = self.config.min_mid_term_frames * hw
        start, end = hw, hw - keep_newest  # end ≤ 0 counts from the end, as the reference slices
        key, shrinkage, selection, usage = self.work.sliced(start, end)
        candidates = [self._candidate_values(v, start, end, keep_newest) for v in self.work.values]
        proto_key, proto_shrinkage, proto_values = self._potentiate(
            key, shrinkage, selection, usage, candidates
        )
        self.work.sieve_by_range(start, end, min_size=keep_newest + hw)
        self.long.add(proto_key, proto_shrinkage, None, proto_values)
        self.consolidations += 1

    def _candidate_values(self, values: Tensor, start: int, end: int, keep_newest: int) -> Tensor | None:
        """A group's values over the candidates, or None when it is too young to consolidate."""
        is_full = values.shape[0] == self.work.size
        if is_full or values.shape[0] > keep_newest + self.frame_elements:
            stop = values.shape[0] + end
            return values[start:stop]
        return None

    def _potentiate(
        self,
        key: Tensor,
        shrinkage: Tensor,
        selection: Tensor | None,
        usage: Tensor,
        candidates: list[Tensor | None],
    ) -> tuple[Tensor, Tensor, list[Tensor | None]]:
        """The top-P used candidates become prototypes; each reads out (full softmax) over the
        candidates its group has values for (XMem §3.3, memory potentiation)."""
        n = key.shape[0]
        p = min(self.config.num_prototypes, n)
        chosen = torch.topk(usage, k=p, dim=0, sorted=True).indices  # P
        proto_selection = None if selection is None else selection[chosen].t()
        sim = similarity(key, shrinkage, key[chosen].t(), proto_selection)  # N×P
        values: list[Tensor | None] = []
        first_affinity: Tensor | None = None
        for cand in candidates:
            valid = chosen >= n - cand.shape[0] if cand is not None else None
            if cand is None or valid is None or not bool(valid.any()):
                values.append(None)
                continue
            affinity = torch.softmax(sim[n - cand.shape[0] :][:, valid], dim=0)  # N_g×P_g
            first_affinity = affinity if first_affinity is None else first_affinity
            values.append(torch.einsum("np,nkc->pkc", affinity, cand))  # P_g×n_g×CV
        assert first_affinity is not None, "the first group always has candidates"
        proto_shrinkage = (first_affinity.t() @ shrinkage).view(-1, 1)  # P×1
        return key[chosen], proto_shrinkage, values

    # --- objects ---------------------------------------------------------------------------

    def remove_object(self, obj: int) -> None:
        """Free one object's values in both memories; keys stay for the others."""
        for g, group in enumerate(self.groups):
            if obj in group:
                row = group.index(obj)
                self.work.remove_object(g, row)
                self.long.remove_object(g, row)
                group.remove(obj)
                if not group:
                    del self.groups[g]
                return
