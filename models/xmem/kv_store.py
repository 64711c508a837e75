"""One memory store (working or long-term): keys shared by all objects, values per group.

Objects given on the same frame form a group. A group added later has values only for
the memory elements written since it arrived, so its values cover the *last* N_g elements
of the store (XMem's buckets). Everything is element-major so that appending, slicing and
gathering elements are cheap: keys N×CK, shrinkage N×1, selection N×CK, group values
N_g×n_g×CV, usage counts N.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

# why: the reference starts life counts at 1e-7 so usage = use / life never divides by 0
_NEW_LIFE = 1e-7


def _cut(x: Tensor, start: int, end: int) -> Tensor:
    """x without rows [start, end) (end ≤ 0 counts from the end, 0 meaning the end)."""
    stop = x.shape[0] + end if end <= 0 else end
    return torch.cat([x[:start], x[stop:]], 0)


def _take(x: Tensor, start: int, end: int) -> Tensor:
    """Rows [start, end) with the same end convention as ``_cut``."""
    stop = x.shape[0] + end if end <= 0 else end
    return x[start:stop]


@dataclass
class KeyValueStore:
    """Memory elements with usage statistics; see the module docstring for layouts."""

    count_usage: bool  # usage drives consolidation and removal: always on in vidserve
    key: Tensor | None = None  # N×CK
    shrinkage: Tensor | None = None  # N×1
    selection: Tensor | None = None  # N×CK (working memory only)
    values: list[Tensor] = field(default_factory=list)  # per group: N_g×n_g×CV
    use_count: Tensor | None = None  # N
    life_count: Tensor | None = None  # N

    @property
    def size(self) -> int:
        return 0 if self.key is None else self.key.shape[0]

    @property
    def num_groups(self) -> int:
        return len(self.values)

    def value_size(self, group: int) -> int:
        return self.values[group].shape[0]

    def engaged(self) -> bool:
        return self.key is not None

    def nbytes(self) -> int:
        tensors = [self.key, self.shrinkage, self.selection, self.use_count, self.life_count, *self.values]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def add(
        self, key: Tensor, shrinkage: Tensor, selection: Tensor | None, values: list[Tensor | None]
    ) -> None:
        """Append elements; ``values[g]`` extends group g (None: not for this group), new groups last."""
        self.key = self._append(self.key, key)
        self.shrinkage = self._append(self.shrinkage, shrinkage)
        if selection is not None:
            self.selection = self._append(self.selection, selection)
        if self.count_usage:
            n = key.shape[0]
            self.use_count = self._append(self.use_count, key.new_zeros(n))
            self.life_count = self._append(self.life_count, key.new_full((n,), _NEW_LIFE))
        for group, value in enumerate(values):
            if value is None:
                continue
            if group < self.num_groups:
                self.values[group] = torch.cat([self.values[group], value], 0)
            else:
                self.values.append(value)

    def snapshot(self) -> KeyValueStore:
        """A copy that shares the tensors (never written in place) but not the lists."""
        return replace(self, values=list(self.values))

    @staticmethod
    def _append(old: Tensor | None, new: Tensor) -> Tensor:
        return new if old is None else torch.cat([old, new], 0)

    def update_usage(self, usage: Tensor) -> None:
        """Every element lived one more readout; ``usage`` (N) is how much each was read."""
        if not self.count_usage or self.use_count is None or self.life_count is None:
            return
        # why not +=: nothing in memory is written in place, so a snapshot that shares these
        # tensors stays valid (``MemoryManager.snapshot``, rolling back a failed batch)
        self.use_count = self.use_count + usage
        self.life_count = self.life_count + 1

    def usage(self) -> Tensor:
        """Use count normalised by life: XMem's LFU score → N."""
        if self.use_count is None or self.life_count is None:
            raise RuntimeError("usage is not counted in this store")
        return self.use_count / self.life_count

    def sliced(self, start: int, end: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """key, shrinkage, selection and usage of elements [start, end)."""
        assert self.key is not None and self.shrinkage is not None
        selection = None if self.selection is None else _take(self.selection, start, end)
        return (
            _take(self.key, start, end),
            _take(self.shrinkage, start, end),
            selection,
            _take(self.usage(), start, end),
        )

    def sieve_by_range(self, start: int, end: int, min_size: int) -> None:
        """Drop elements [start, end); a group's values are cut (from its own start) only when it
        holds at least ``min_size`` elements, as the reference does."""
        assert self.key is not None
        self.key = _cut(self.key, start, end)
        self.shrinkage = None if self.shrinkage is None else _cut(self.shrinkage, start, end)
        self.selection = None if self.selection is None else _cut(self.selection, start, end)
        if self.use_count is not None and self.life_count is not None:
            self.use_count = _cut(self.use_count, start, end)
            self.life_count = _cut(self.life_count, start, end)
        self.values = [_cut(v, start, end) if v.shape[0] >= min_size else v for v in self.values]

    def remove_least_used(self, max_size: int) -> bool:
        """Keep at most ``max_size`` elements, dropping the least used; True if any went.

        The reference refuses once objects arrived on different frames (XMem issue 43). A
        group's values cover the last N_g elements, so the same keep-mask, cut to its last
        N_g entries, applies to every group.
        """
        excess = self.size - max_size
        if excess <= 0:
            return False
        usage = self.usage()
        lowest, _ = torch.topk(usage, k=excess, largest=False, sorted=True)
        keep = usage > lowest[-1]
        assert self.key is not None
        self.key = self.key[keep]
        self.shrinkage = None if self.shrinkage is None else self.shrinkage[keep]
        self.selection = None if self.selection is None else self.selection[keep]
        self.use_count = None if self.use_count is None else self.use_count[keep]
        self.life_count = None if self.life_count is None else self.life_count[keep]
        self.values = [v[keep[keep.shape[0] - v.shape[0] :]] for v in self.values]
        return True

    def remove_object(self, group: int, row: int) -> None:
        """Forget one object's values (row ``row`` of group ``group``); an empty group goes."""
        if group >= self.num_groups:
            return
        kept = torch.cat([self.values[group][:, :row], self.values[group][:, row + 1 :]], 1)
        if kept.shape[1] == 0:
            del self.values[group]
        else:
            self.values[group] = kept
