"""Checkpoint size and time per segmentation session (issue 17): one XMem session at 480p
(480×864), 2 objects, its memory full, checkpointed to a real Redis and restored.

The state. An XMem ``InferenceCore`` (eager torch, the conformance README's hashed weights,
the paper's settings: memory frame every 5, T_min 5, T_max 10, 128 prototypes, 10000
long-term elements) steps ``--frames`` real frames: frame 0 with a mask of two elliptic
blobs, then frames panned over scikit-image's astronaut (``bench/xmem_core.py``'s frames).
Filling its memory by stepping would take ~2000 more frames at 4-10 s each on a 2-core CPU,
so the memory is filled instead through its own methods with the real per-frame tensors:
the keys, shrinkage, selection and values the engines wrote for the stepped memory frames
are read back out of working memory and appended again, cycling over them, each with one
readout first (``MemoryManager.match_memory`` with that frame's key and selection, which
counts usage as a frame does) and then ``MemoryManager.add_memory``, so consolidation into
prototypes runs as it would in a stream. It stops when working memory holds T_max − 1
frames and long-term memory is full: at least L_max − P elements, so that the next
consolidation must first remove the least used (at 480p, 78 consolidations of P = 128:
9984 of 10000). ``add_memory`` consolidates the moment working memory reaches T_max frames,
so T_max − 1 is the most it holds between frames: the size a checkpoint sees at its peak.
It stops before a removal because LFU removal (``KeyValueStore.remove_least_used``, as the
reference) also drops every element tied with the last one to go, and in a memory built
from a few repeated frames most long-term elements tie at usage 0: a removal there cuts far
below the cap. The sensory memory is the stepped frames' own; the frame counters advance by
mem_every per appended memory frame, as a stream's would.

The measurements, ``--reps`` times interleaved (each repetition runs every stage in turn):
``state_tensors`` (snapshot), ``pack`` (safetensors + JSON header + sha256), the store's
``put`` and ``get`` (``server/sessions/redis_store.py``) to a ``redis-server`` this script
starts on a free loopback port and stops at the end, ``unpack`` and ``state_from_tensors``
(rebuild); every restore is compared with the original, tensor by tensor (``torch.equal``),
and the restored state steps one more frame to the same probabilities as the original.
Per stage: wall time, minor page faults and system time (``getrusage`` deltas).

    python bench/checkpoint.py --write        # the section ``checkpoint`` of BENCHMARKS.md
    python bench/checkpoint.py --quick        # 64×96 frames, a small memory: seconds
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import hashlib
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # why: run as a script, only bench/ is on sys.path

import redis  # noqa: E402
import torch  # noqa: E402
from report import device_line, load_average, refuse_when_loaded, versions, write_section  # noqa: E402
from torch import Tensor  # noqa: E402
from xmem_core import FrameSource, blob_mask  # noqa: E402

from models.state_file import pack, unpack  # noqa: E402
from models.xmem.config import XMemConfig  # noqa: E402
from models.xmem.export import eager_engines  # noqa: E402
from models.xmem.inference_core import InferenceCore, XMemState  # noqa: E402
from models.xmem.memory_manager import MemoryManager, memory_bound_bytes  # noqa: E402
from models.xmem.state_io import state_from_tensors, state_tensors  # noqa: E402
from server.sessions.redis_store import PREFIX, RedisStateStore  # noqa: E402
from tests.models.xmem_support import hashed_xmem  # noqa: E402

T = TypeVar("T")
SECTION = "checkpoint"
REDIS_SERVER = "/usr/bin/redis-server"
MIB = 1024 * 1024
OBJECTS = (1, 2)
SESSION_ID = "bench-checkpoint"
TTL_S = 3600.0
STAGES = ("snapshot", "pack", "put", "get", "unpack", "rebuild")
CHECKPOINT_STAGES = ("snapshot", "pack", "put")
RESTORE_STAGES = ("get", "unpack", "rebuild")
STAGE_NAMES = {
    "snapshot": "snapshot (`state_tensors`)",
    "pack": "pack (`models/state_file.pack`)",
    "put": "Redis put (`RedisStateStore.put`)",
    "get": "Redis get (`RedisStateStore.get`)",
    "unpack": "unpack (`models/state_file.unpack`, digest checked)",
    "rebuild": "rebuild (`state_from_tensors`)",
    "checkpoint": "**checkpoint** (snapshot + pack + put)",
    "restore": "**restore** (get + unpack + rebuild)",
}


# --- the full-memory state -----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    name: str  # "full" or "quick"
    size: tuple[int, int]  # H×W of the frames
    config: XMemConfig
    frames: int  # real frames stepped through the engines (frame 0 with the mask)
    reps: int


FULL = Plan("full", (480, 864), XMemConfig(), frames=11, reps=7)
# why these: a tiny memory that still consolidates and removes: 4×6 elements a frame, 16
# prototypes per consolidation, a long-term cap of 200
QUICK = Plan("quick", (64, 96), XMemConfig(num_prototypes=16, max_long_term_elements=200), frames=11, reps=5)


@dataclass(frozen=True)
class FrameTensors:
    """What one memory frame wrote: key CK×h×w, shrinkage 1×h×w, selection CK×h×w, value n×CV×h×w."""

    key: Tensor
    shrinkage: Tensor
    selection: Tensor
    value: Tensor


@dataclass
class Filled:
    """The state and how it was made."""

    state: XMemState
    stepped_s: float  # stepping the real frames
    fill_s: float  # appending memory frames
    real_memory_frames: int  # memory frames the engines wrote
    appended: int  # memory frames appended from them
    elements_per_frame: int


def written_frames(memory: MemoryManager, h: int, w: int) -> list[FrameTensors]:
    """Working memory's frames as ``add_memory`` took them (one object group: all objects
    came on frame 0), read back out of its element-major rows."""
    work, hw = memory.work, h * w
    assert work.key is not None and work.shrinkage is not None and work.selection is not None
    if work.num_groups != 1 or work.values[0].shape[0] != work.size:
        raise RuntimeError("expected one object group covering all of working memory")
    frames = []
    for i in range(work.size // hw):
        rows = slice(i * hw, (i + 1) * hw)
        value = work.values[0][rows]  # Q×n×CV
        frames.append(
            FrameTensors(
                key=work.key[rows].t().reshape(-1, h, w),
                shrinkage=work.shrinkage[rows].t().reshape(1, h, w),
                selection=work.selection[rows].t().reshape(-1, h, w),
                value=value.permute(1, 2, 0).reshape(value.shape[1], value.shape[2], h, w),
            )
        )
    return frames


def is_full(memory: MemoryManager, config: XMemConfig) -> bool:
    """Working memory at T_max − 1 frames (the most it holds between frames) and long-term
    memory full: so near its cap that the next consolidation must first remove."""
    peak_work = (config.max_mid_term_frames - 1) * memory.frame_elements
    full_long = memory.long.size >= config.max_long_term_elements - config.num_prototypes
    return full_long and memory.work.size == peak_work


def full_state(core: InferenceCore, source: FrameSource, plan: Plan) -> Filled:
    mask = blob_mask(source.height, source.width, len(OBJECTS), OBJECTS)
    started = time.perf_counter()
    for t in range(plan.frames):
        core.step(source.frame(t), mask if t == 0 else None)
        print(f"  stepped frame {t} ({time.perf_counter() - started:.0f} s)", flush=True)
    stepped_s = time.perf_counter() - started
    state = core.state
    assert state.hidden is not None
    h, w = state.hidden.shape[-2:]
    real = written_frames(state.memory, h, w)
    memory, config = state.memory, state.config
    started, appended = time.perf_counter(), 0
    limit = 4 * config.max_long_term_elements + config.max_mid_term_frames  # ≥ 1 element per frame
    with torch.no_grad():
        while not is_full(memory, config):
            if appended > limit:
                raise RuntimeError(f"memory not full after {appended} memory frames: is long-term on?")
            frame = real[appended % len(real)]
            memory.match_memory(frame.key, frame.selection)  # a readout: counts usage
            memory.add_memory(
                frame.key, frame.shrinkage, frame.value, list(state.object_ids), frame.selection
            )
            state.frame_index += config.mem_every
            state.last_memory_frame = state.frame_index
            appended += 1
            if appended % 20 == 0:
                print(
                    f"  appended {appended} memory frames: working {memory.work.size}, long-term "
                    f"{memory.long.size} ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    return Filled(state, stepped_s, time.perf_counter() - started, len(real), appended, h * w)


# --- a redis-server of our own -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """redis://127.0.0.1:PORT/0 of a fresh ``redis-server`` (no persistence), stopped on exit."""
    if not Path(REDIS_SERVER).exists():
        raise SystemExit(f"{REDIS_SERVER} is missing: install Debian's redis-server")
    port = free_port()
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*command, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise TimeoutError(f"redis-server did not answer on port {port}") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class RedisFacts:
    url: str  # of the server this run started (stopped by now)
    version: str
    proto_max_bulk_len: int
    client_query_buffer_limit: int
    key_bytes: int  # MEMORY USAGE of the session's state key
    used_memory_delta: int  # INFO used_memory after the first put, less before


def redis_config(client: redis.Redis) -> tuple[str, int, int]:
    info: dict[str, Any] = client.info("server")
    config: dict[Any, Any] = client.config_get("proto-max-bulk-len")
    config.update(client.config_get("client-query-buffer-limit"))
    return (
        str(info["redis_version"]),
        int(config["proto-max-bulk-len"]),
        int(config["client-query-buffer-limit"]),
    )


def used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


# --- the measurements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One stage of one repetition."""

    ms: float
    faults: int  # minor page faults
    sys_ms: float  # system CPU time


@dataclass
class Outcome:
    """One run: the state, its checkpoint, and every repetition's samples."""

    plan: Plan
    filled: Filled
    blob_bytes: int
    tier_bytes: dict[str, int]  # working, long-term, sensory
    tensor_bytes: int  # all of the state's tensors
    bound_bytes: int  # memory_bound_bytes
    samples: dict[str, list[Sample]]
    restored: XMemState  # the last repetition's restore
    exact: list[bool]  # per repetition: every tensor and field equal
    next_frame_equal: bool  # one more frame from the restore gives the original's probabilities
    redis: RedisFacts
    wall_s: float = 0.0
    load: tuple[str, str] = ("", "")
    argv: list[str] = field(default_factory=list)

    def median(self, stage: str) -> float:
        return statistics.median(s.ms for s in self.samples[stage])


@contextmanager
def stage(samples: dict[str, list[Sample]], name: str) -> Iterator[None]:
    """Time the block: wall time and ``getrusage`` deltas, appended to ``samples[name]``."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    yield
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    faults, sys_s = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
    samples[name].append(Sample(wall * 1000, faults, sys_s * 1000))


def header_for(fields: dict[str, Any]) -> dict[str, Any]:
    """A header shaped as the server's (``server/sessions/persist.py``), the weights' digest
    a stand-in: this run's weights are the hashed test weights."""
    return {
        "task": "segmentation",
        "model": "xmem",
        "weights_sha256": hashlib.sha256(b"tests.models.xmem_support.hashed_xmem").hexdigest(),
        "settings": {"processing_size": None, "max_objects": len(OBJECTS)},
        "fields": {"xmem": fields},
        "session": {"id": SESSION_ID},
    }


def same_state(a: XMemState, b: XMemState) -> bool:
    """Every tensor equal (``torch.equal``: same shape, dtype and values) and every field."""
    ta, fa = state_tensors(a)
    tb, fb = state_tensors(b)
    return fa == fb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def tier_bytes(tensors: dict[str, Tensor]) -> dict[str, int]:
    tiers = {"working": "work.", "long-term": "long.", "sensory": "hidden"}
    return {
        tier: sum(t.numel() * t.element_size() for name, t in tensors.items() if name.startswith(prefix))
        for tier, prefix in tiers.items()
    }


@dataclass
class Reps:
    samples: dict[str, list[Sample]]
    restored: XMemState  # the last repetition's
    exact: list[bool]  # per repetition: every tensor and field equal
    blob_bytes: int


def repetitions(state: XMemState, url: str, reps: int) -> Reps:
    samples: dict[str, list[Sample]] = {stage: [] for stage in STAGES}
    loop = asyncio.new_event_loop()
    store = RedisStateStore(url)
    restored, exact, blob_bytes = state, [], 0
    try:
        for rep in range(reps):
            with stage(samples, "snapshot"):
                tensors, fields = state_tensors(state)
            with stage(samples, "pack"):
                blob = pack(tensors, header_for(fields))
            with stage(samples, "put"):
                loop.run_until_complete(store.put(SESSION_ID, blob, TTL_S))
            with stage(samples, "get"):
                got = loop.run_until_complete(store.get(SESSION_ID))
            assert got is not None
            with stage(samples, "unpack"):
                back, header = unpack(got)
            with stage(samples, "rebuild"):
                restored = state_from_tensors(back, header["fields"]["xmem"], "cpu")
            exact.append(same_state(state, restored))
            blob_bytes = len(blob)
            ms = {name: samples[name][-1].ms for name in STAGES}
            print(f"  rep {rep}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items()), flush=True)
    finally:
        loop.run_until_complete(store.close())
        loop.close()
    return Reps(samples, restored, exact, blob_bytes)


def redis_facts(url: str, state: XMemState) -> RedisFacts:
    """The server's limits, and what one stored session costs it."""
    client = redis.Redis.from_url(url)
    try:
        version, bulk, query = redis_config(client)
        client.flushdb()
        before = used_memory(client)
        tensors, fields = state_tensors(state)
        blob = pack(tensors, header_for(fields))
        asyncio.run(_put(url, blob))
        key_bytes = int(client.memory_usage(f"{PREFIX}:state:{SESSION_ID}") or 0)
        return RedisFacts(url, version, bulk, query, key_bytes, used_memory(client) - before)
    finally:
        client.close()


async def _put(url: str, blob: bytes) -> None:
    store = RedisStateStore(url)
    try:
        await store.put(SESSION_ID, blob, TTL_S)
    finally:
        await store.close()


def next_frame_equal(core: InferenceCore, original: XMemState, restored: XMemState, frame: Any) -> bool:
    """One more frame stepped from each state: the same probabilities, bit for bit."""
    core.state = original
    a = core.step(frame).prob
    core.state = restored
    b = core.step(frame).prob
    core.state = original
    return torch.equal(a, b)


def run(plan: Plan) -> Outcome:
    """The whole measurement (no file written)."""
    torch.manual_seed(0)
    source = FrameSource.make(*plan.size)
    core = InferenceCore(eager_engines(hashed_xmem()), plan.config)
    print(f"building the state: {plan.size[0]}×{plan.size[1]}, {len(OBJECTS)} objects", flush=True)
    filled = full_state(core, source, plan)
    state = filled.state
    tensors, _ = state_tensors(state)
    tiers = tier_bytes(tensors)
    assert state.frame_size is not None
    bound = memory_bound_bytes(state.config, state.frame_size, len(state.object_ids))
    with tempfile.TemporaryDirectory(prefix="vidserve-redis-") as folder, redis_server(Path(folder)) as url:
        facts = redis_facts(url, state)
        print(f"redis-server {facts.version} at {url}; measuring {plan.reps} repetitions", flush=True)
        reps = repetitions(state, url, plan.reps)
    equal_next = next_frame_equal(core, state, reps.restored, source.frame(plan.frames))
    return Outcome(
        plan=plan,
        filled=filled,
        blob_bytes=reps.blob_bytes,
        tier_bytes=tiers,
        tensor_bytes=sum(t.numel() * t.element_size() for t in tensors.values()),
        bound_bytes=bound,
        samples=reps.samples,
        restored=reps.restored,
        exact=reps.exact,
        next_frame_equal=equal_next,
        redis=facts,
    )


# --- the section ---------------------------------------------------------------------------


def mib(n: int | float) -> str:
    return f"{n / MIB:.2f}"


def state_table(out: Outcome) -> str:
    memory, hw = out.filled.state.memory, out.filled.elements_per_frame
    assert out.filled.state.hidden is not None
    elements = {
        "working": f"{memory.work.size} ({memory.work.size // hw} frames × {hw})",
        "long-term": f"{memory.long.size} (cap {out.plan.config.max_long_term_elements})",
        "sensory": f"{len(OBJECTS)} objects × {out.filled.state.hidden.shape[1]} × {hw}",
    }
    lines = ["| part | elements | MiB |", "|---|---:|---:|"]
    lines += [f"| {tier} | {elements[tier]} | {mib(n)} |" for tier, n in out.tier_bytes.items()]
    lines.append(f"| all tensors | | {mib(out.tensor_bytes)} |")
    lines.append(f"| blob (safetensors + header) | | {mib(out.blob_bytes)} |")
    lines.append(f"| `memory_bound_bytes` | | {mib(out.bound_bytes)} |")
    return "\n".join(lines)


def row(name: str, ms: list[float], faults: list[int], sys_ms: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} "
        f"| {statistics.median(faults):.0f} | {statistics.median(sys_ms):.1f} |"
    )


def time_table(out: Outcome) -> str:
    lines = [
        "| stage | median ms | min ms | max ms | minor faults (median) | system ms (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        s = out.samples[stage]
        lines.append(row(STAGE_NAMES[stage], [x.ms for x in s], [x.faults for x in s], [x.sys_ms for x in s]))
    for total, parts in (("checkpoint", CHECKPOINT_STAGES), ("restore", RESTORE_STAGES)):
        reps = range(out.plan.reps)
        ms = [sum(out.samples[p][i].ms for p in parts) for i in reps]
        faults = [sum(out.samples[p][i].faults for p in parts) for i in reps]
        sys_ms = [sum(out.samples[p][i].sys_ms for p in parts) for i in reps]
        lines.append(row(STAGE_NAMES[total], ms, faults, sys_ms))
    return "\n".join(lines)


def section(out: Outcome) -> str:
    plan, filled, config, facts = out.plan, out.filled, out.plan.config, out.redis
    height, width = plan.size
    memory = filled.state.memory
    checkpoint_ms = statistics.median(
        sum(out.samples[p][i].ms for p in CHECKPOINT_STAGES) for i in range(plan.reps)
    )
    restore_ms = statistics.median(
        sum(out.samples[p][i].ms for p in RESTORE_STAGES) for i in range(plan.reps)
    )
    command = shlex.join(["python", "bench/checkpoint.py", *out.argv])
    is_default = facts.proto_max_bulk_len == 512 * MIB
    bulk_default = "Redis's default `512mb`" if is_default else "**not** Redis's default `512mb`"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    settings = "the paper's settings" if config == XMemConfig() else "these settings"
    quick = " (**quick mode**: tiny frames, a small memory)" if plan.name == "quick" else ""
    intro = (
        f"One segmentation session at {height}×{width}, {len(OBJECTS)} objects, its memory full{quick}: "
        f"XMem with {settings} (memory frame every {config.mem_every}, T_min "
        f"{config.min_mid_term_frames}, T_max {config.max_mid_term_frames}, {config.num_prototypes} "
        f"prototypes, long-term cap {config.max_long_term_elements}), eager torch, the conformance "
        "README's hashed weights (sizes and times do not depend on the weight values)."
    )
    stream_frames = filled.appended * config.mem_every
    per_frame_s = filled.stepped_s / plan.frames
    how = (
        f"How the full memory was made: `InferenceCore.step` ran {plan.frames} real frames (frame 0 "
        "with a mask of two elliptic blobs, the rest panned over scikit-image's astronaut as in "
        f"`bench/xmem_core.py`; {filled.stepped_s:.0f} s), which wrote {filled.real_memory_frames} "
        f"memory frames. Stepping the ~{stream_frames} more frames that fill the memory would take "
        f"~{stream_frames * per_frame_s / 3600:.1f} h at this run's {per_frame_s:.1f} s a frame, so "
        "the keys, shrinkage, selection and values those memory frames wrote were read back out of "
        f"working memory and appended again, cycling over them: {filled.appended} memory frames, each "
        "with one readout first (`MemoryManager.match_memory` with that frame's key and selection, "
        f"which counts usage as a frame does; a stream reads {config.mem_every} frames per memory "
        "frame, so usage counts are lower: they choose which candidates become prototypes, not how "
        "many), then `MemoryManager.add_memory`, so consolidation into prototypes ran as in a stream "
        f"({memory.consolidations} consolidations, {filled.fill_s:.0f} s). It stopped with working memory "
        f"at T_max − 1 = {config.max_mid_term_frames - 1} frames (`add_memory` consolidates as soon as "
        "working memory reaches T_max frames, so that is the most a state holds between frames) and "
        f"long-term memory full: {memory.long.size} elements, at least cap − P = "
        f"{config.max_long_term_elements - config.num_prototypes}, so the next consolidation must first "
        "remove the least used. It stopped before that removal (long-term removals: "
        f"{memory.long_term_removals}) because LFU removal (`KeyValueStore.remove_least_used`, as the "
        "reference) also drops every element whose usage ties with the last one to go, and in a memory "
        "built from a few repeated frames most long-term elements tie at usage 0, so a removal here "
        "cuts far below the cap (a real stream's state after a removal holds at most the cap, "
        f"{config.max_long_term_elements}). The sensory memory is the stepped frames' own; the frame "
        "counters advanced by mem_every per appended memory frame (the state ends on frame "
        f"{filled.state.frame_index})."
    )
    bound = (
        f"The state's tensors are {out.tensor_bytes / out.bound_bytes:.0%} of `memory_bound_bytes` "
        f"({mib(out.bound_bytes)} MiB), which counts T_max + 1 working frames, P long-term elements "
        "beyond the cap and a selection map for every element (long-term elements have none): a bound "
        "over the moments inside `add_memory` too, not a state a checkpoint can see."
    )
    measure = (
        f"Times: {plan.reps} repetitions, interleaved (each runs every stage in turn), after one "
        "untimed checkpoint that measured the store's memory; min and max are over the repetitions; "
        "page faults and system time are `getrusage(RUSAGE_SELF)` deltas of this process (Redis's "
        "own work shows in the put and get wall times, not in their faults). Redis: `redis-server` "
        f"{facts.version} (Debian's), started by the script on a free loopback port with `--save '' "
        "--appendonly no`, stopped at the end; the store is the server's `RedisStateStore` "
        "(redis-py asyncio, one connection)."
    )
    checks = (
        f"Every restore equal to the original, tensor by tensor (`torch.equal`) and field by field: "
        f"{'yes' if all(out.exact) else '**no**'} ({sum(out.exact)} of {len(out.exact)}); one more "
        "frame stepped from the restored state gives the original's probabilities bit for bit: "
        f"{'yes' if out.next_frame_equal else '**no**'}."
    )
    verdict = (
        f"A checkpoint of this session is {mib(out.blob_bytes)} MiB and takes {checkpoint_ms:.0f} ms "
        f"(snapshot, pack, put); a restore takes {restore_ms:.0f} ms (get, unpack, rebuild). Redis's "
        f"`proto-max-bulk-len` (the largest string it takes) is {facts.proto_max_bulk_len / MIB:.0f} MiB "
        f"({bulk_default}, read with CONFIG GET) and `client-query-buffer-limit` "
        f"{facts.client_query_buffer_limit / 2**30:.0f} GiB, so one session's state fits "
        f"{facts.proto_max_bulk_len / out.blob_bytes:.1f} times over. In the store one session costs "
        f"{mib(facts.key_bytes)} MiB (`MEMORY USAGE` of its key; `used_memory` grew by "
        f"{mib(facts.used_memory_delta)} MiB): size a Redis for N sessions at about N × that, each key "
        "expiring with the session TTL."
    )
    environment = "\n".join(
        [
            device_line(),
            f"- Threads: torch {torch.get_num_threads()}.",
            f"- Versions: {versions()}; redis-py {redis.__version__}, Redis {facts.version}.",
            f"- Command: `{command}` (run from the repository root), {date}; {out.wall_s:.0f} s in all.",
            f"- Load average (1, 5, 15 min) at start {out.load[0]}, at end {out.load[1]}.",
        ]
    )
    parts = [
        "## Session checkpoint size and time (XMem, CPU, `bench/checkpoint.py`)",
        intro,
        environment,
        state_table(out),
        time_table(out),
        verdict,
        checks,
        how,
        bound,
        measure,
    ]
    return "\n\n".join(parts)


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64×96 frames and a small memory (seconds)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (at least 5; default 7, quick 5)")
    parser.add_argument("--write", action="store_true", help="write the section of --output")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 5:
        parser.error("--reps must be at least 5 (medians over fewer say little)")
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    return base if args.reps is None else dataclasses.replace(base, reps=args.reps)


def bench(argv: Sequence[str]) -> Outcome:
    """Measure, print the section, and write it with ``--write`` (the test's way in)."""
    args = parse_args(argv)
    if args.write:
        refuse_when_loaded()
    load_start, start = load_average(), time.perf_counter()
    out = run(plan_of(args))
    out.wall_s, out.load, out.argv = time.perf_counter() - start, (load_start, load_average()), list(argv)
    body = section(out)
    print()
    print(body)
    if args.write:
        write_section(args.output, SECTION, body)
        print(f"\nwrote section {SECTION} of {args.output}", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    out = bench(list(sys.argv[1:] if argv is None else argv))
    return 0 if all(out.exact) and out.next_frame_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
