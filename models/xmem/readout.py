"""XMem's memory readout: anisotropic L2 affinity, top-k softmax, weighted sum of values.

Tensors are element-major: memory keys ``N×CK``, values ``N×n×CV`` (n objects), queries
``CK×Q``. The readout gathers the top-k values of each query with ``embedding_bag``
instead of scattering into a dense ``N×Q`` affinity (about 170 MB per frame at 480p with a
full long-term memory): same sums, a fraction of the memory and time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# why: bounds the N×chunk similarity block (64 MB of float32) whatever the memory size
_SIMILARITY_BLOCK = 1 << 24


def similarity(
    mem_key: Tensor, mem_shrinkage: Tensor | None, query_key: Tensor, query_selection: Tensor | None
) -> Tensor:
    """Negative anisotropic squared L2 distance, scaled by shrinkage / sqrt(CK) → N×Q.

    mem_key: N×CK, mem_shrinkage: N×1, query_key / query_selection: CK×Q (XMem eq. 4).
    """
    ck = mem_key.shape[1]
    if query_selection is None:
        sim = (
            2 * mem_key @ query_key
            - mem_key.pow(2).sum(1, keepdim=True)
            - query_key.pow(2).sum(0, keepdim=True)
        )
    else:
        a_sq = mem_key.pow(2) @ query_selection
        two_ab = 2 * (mem_key @ (query_key * query_selection))
        b_sq = (query_selection * query_key.pow(2)).sum(0, keepdim=True)
        sim = -a_sq + two_ab - b_sq
    if mem_shrinkage is not None:
        sim = sim * mem_shrinkage
    return sim / math.sqrt(ck)


def topk_softmax(sim: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Per query, the k most similar elements and their softmax weights → (k×Q, k×Q).

    ``top_k`` larger than the memory (small frames, young sessions) clamps to its size.
    """
    k = min(top_k, sim.shape[0])
    values, indices = torch.topk(sim, k=k, dim=0)
    return torch.softmax(values, dim=0), indices


def gather_readout(values: Tensor, weights: Tensor, indices: Tensor) -> Tensor:
    """Σ_j weight[j, q] · values[indices[j, q]]: values N×n×CV, weights/indices k×Q → n×CV×Q."""
    n, cv = values.shape[1], values.shape[2]
    table = values.reshape(values.shape[0], n * cv)
    out = F.embedding_bag(indices.t(), table, per_sample_weights=weights.t(), mode="sum")  # Q×(n·CV)
    return out.view(-1, n, cv).permute(1, 2, 0)


def usage_of(weights: Tensor, indices: Tensor, size: int) -> Tensor:
    """How much each of ``size`` elements was read: the sum of its weights over queries → N."""
    usage = torch.zeros(size, dtype=weights.dtype, device=weights.device)
    return usage.index_add_(0, indices.flatten(), weights.flatten())


def query_chunks(n_memory: int, n_queries: int) -> list[tuple[int, int]]:
    """Query ranges whose N×chunk similarity block stays under the bound."""
    step = max(1, min(n_queries, _SIMILARITY_BLOCK // max(1, n_memory)))
    return [(start, min(start + step, n_queries)) for start in range(0, n_queries, step)]
