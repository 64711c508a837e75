"""bench/checkpoint.py's quick mode end to end, against a real redis-server: a full memory
checkpointed and restored exactly, and the section it writes. No timing is asserted."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from models.xmem.state_io import state_tensors
from tests.conftest import REPO_ROOT

# why: the benchmarks are scripts, importing each other by name from bench/, as they run
sys.path.insert(0, str(REPO_ROOT / "bench"))
import checkpoint as bench_checkpoint
from report import FORCE_ENV

REQUIRE_ENV = "VIDSERVE_REQUIRE_REDIS"


def require_redis(binary: str) -> None:
    """A skip where redis-server is missing, a failure where VIDSERVE_REQUIRE_REDIS=1."""
    if Path(binary).exists():
        return
    reason = f"{binary} is missing: install Debian's redis-server (scripts/test.sh does, as root)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1, but {reason}")
    pytest.skip(reason)


def test_a_missing_redis_server_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="VIDSERVE_REQUIRE_REDIS=1"):
        require_redis("/nonexistent/redis-server")
    monkeypatch.delenv(REQUIRE_ENV)
    with pytest.raises(pytest.skip.Exception, match="is missing"):
        require_redis("/nonexistent/redis-server")


def test_quick_checkpoint_restores_a_full_memory_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_redis(bench_checkpoint.REDIS_SERVER)
    monkeypatch.setenv(FORCE_ENV, "1")  # why: the section is the thing tested, whatever the load
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n")
    out = bench_checkpoint.bench(["--quick", "--write", "--output", str(output)])

    # the memory is full: long-term so near its cap that the next consolidation must remove,
    # working memory at T_max − 1 frames
    state, config = out.filled.state, out.plan.config
    memory, hw = state.memory, out.filled.elements_per_frame
    assert state.object_ids == [1, 2]
    cap = config.max_long_term_elements
    assert cap - config.num_prototypes <= memory.long.size <= cap
    assert memory.consolidations >= 2
    assert memory.work.size == (config.max_mid_term_frames - 1) * hw
    assert 0.5 * out.bound_bytes <= out.tensor_bytes <= out.bound_bytes
    assert out.blob_bytes > out.tensor_bytes == sum(out.tier_bytes.values())

    # the restore (through Redis) is the original, tensor by tensor and field by field
    original, original_fields = state_tensors(state)
    restored, restored_fields = state_tensors(out.restored)
    assert restored.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(restored[name], tensor), name
        assert restored[name].dtype == tensor.dtype, name
    assert restored_fields == original_fields
    assert out.exact == [True] * out.plan.reps and out.plan.reps >= 5
    assert out.next_frame_equal

    # its redis-server was stopped
    url = urlparse(out.redis.url)
    with pytest.raises(OSError), socket.create_connection((url.hostname, url.port or 0), timeout=1):
        pass

    text = output.read_text()
    assert "<!-- bench:other -->\nkept\n<!-- /bench:other -->" in text
    section = text.split("<!-- bench:checkpoint -->", 1)[1].split("<!-- /bench:checkpoint -->", 1)[0]
    expected_rows = [
        "| working | 216 (9 frames × 24) |",
        "| long-term | 192 (cap 200) |",
        "| sensory | 2 objects × 64 × 24 |",
        "| all tensors |",
        "| blob (safetensors + header) |",
        "| `memory_bound_bytes` |",
        *(f"| {bench_checkpoint.STAGE_NAMES[stage]} |" for stage in bench_checkpoint.STAGE_NAMES),
    ]
    for row in expected_rows:
        assert f"\n{row}" in section, row
    command = "- Command: `python bench/checkpoint.py --quick"
    environment = ["- Device:", "- Versions:", command, "- Load average"]
    for line in environment:
        assert f"\n{line}" in section, line
    assert "proto-max-bulk-len" in section and "MEMORY USAGE" in section
    assert "(5 of 5)" in section and "**no**" not in section
