"""The gathered top-k readout equals the reference's dense scatter, usage included."""

from __future__ import annotations

import math

import pytest
import torch

from models.weights.registry import get_entry
from models.xmem.loading import WeightsMissingError, cached_weights
from models.xmem.readout import gather_readout, query_chunks, similarity, topk_softmax, usage_of


def _dense_reference(
    mem_key: torch.Tensor,
    mem_shrinkage: torch.Tensor,
    qk: torch.Tensor,
    qe: torch.Tensor,
    values: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's way: N×Q similarity, top-k exp-normalise, scatter into a dense affinity."""
    a_sq = mem_key.pow(2) @ qe
    two_ab = 2 * (mem_key @ (qk * qe))
    b_sq = (qe * qk.pow(2)).sum(0, keepdim=True)
    sim = (-a_sq + two_ab - b_sq) * mem_shrinkage / math.sqrt(mem_key.shape[1])
    top, idx = torch.topk(sim, k=k, dim=0)
    weights = top.exp() / top.exp().sum(0, keepdim=True)
    affinity = torch.zeros_like(sim).scatter_(0, idx, weights)  # N×Q
    readout = torch.einsum("nkc,nq->kcq", values, affinity)
    return readout, affinity.sum(1)


@pytest.mark.parametrize(("n", "q", "k"), [(200, 60, 30), (12, 50, 30), (1, 4, 30)])
def test_gathered_readout_equals_dense(n: int, q: int, k: int) -> None:
    gen = torch.Generator().manual_seed(n)
    mem_key = torch.randn(n, 64, generator=gen)
    mem_shrinkage = 1 + torch.rand(n, 1, generator=gen)
    qk, qe = torch.randn(64, q, generator=gen), torch.rand(64, q, generator=gen)
    values = torch.randn(n, 3, 16, generator=gen)
    expected, expected_usage = _dense_reference(mem_key, mem_shrinkage, qk, qe, values, min(k, n))
    weights, indices = topk_softmax(similarity(mem_key, mem_shrinkage, qk, qe), k)
    assert weights.shape == (min(k, n), q), "top_k larger than the memory clamps"
    assert torch.allclose(gather_readout(values, weights, indices), expected, atol=1e-5)
    assert torch.allclose(usage_of(weights, indices, n), expected_usage, atol=1e-5)


def test_query_chunks_bound_the_similarity_block() -> None:
    chunks = query_chunks(1 << 20, 1000)
    assert chunks[0] == (0, 16) and chunks[-1][1] == 1000
    assert query_chunks(10, 7) == [(0, 7)]


def test_missing_weights_say_how_to_fetch(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSERVE_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsMissingError, match=r"python -m models fetch xmem"):
        cached_weights("xmem")
    assert get_entry("xmem").filename == "XMem.pth"
