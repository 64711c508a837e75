"""The FastAPI app: routes, error handlers, and the life cycle (load engines in the
background, expire idle sessions, shut down in order)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from server import __version__, logs
from server.access import Access
from server.api import demo, deps, docs, errors, health, jobs, models, openapi, sessions, stream
from server.engines.engine import EngineError, EngineSet
from server.jobs.store import Job, JobState, JobStore
from server.metrics import Metrics
from server.scheduler import SchedulerConfig
from server.sessions import MemoryBudget, SessionStore
from server.sessions.persist import Persistence, default_replica_id
from server.sessions.redis_store import RedisStateStore
from server.sessions.store import Session
from server.settings import Settings
from server.state import ModelState, ServedModel, ServerState
from server.tasks.base import LoadContext, ModelService, Task
from server.tasks.registry import TASKS

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, tasks: Sequence[Task[Any, Any]] = TASKS) -> FastAPI:
    settings = settings or Settings()
    state = ServerState(
        settings,
        Metrics(),
        SessionStore(settings.max_sessions, settings.session_ttl_s),
        MemoryBudget(settings.memory_budget_bytes),
        _job_store(settings),
        tuple(tasks),
    )
    app = FastAPI(
        title="vidserve",
        version=__version__,
        summary="Real-time video inference: " + ", ".join(t.title for t in tasks),
        lifespan=lifespan,
        docs_url=None,  # why: FastAPI's pages load from a CDN; server/api/docs.py serves its own
        redoc_url=None,
    )
    if settings.state_store:
        state.persistence = _persistence(settings)
    app.state.server = state
    routers = [health.router, models.router, sessions.build_router(tasks), stream.router, docs.router]
    routers += [jobs.build_router(tasks), demo.router, *(t.router for t in tasks if t.router is not None)]
    for router in routers:
        app.include_router(router)
    errors.install(app, [e for t in tasks for e in t.errors])
    openapi.install(app)
    app.add_middleware(deps.BodyLimit)
    app.add_middleware(Access)  # why after BodyLimit: outside it, so no body is read for a refused key
    app.add_middleware(errors.ServerErrors)  # why here: inside the counter, which tags and counts its 500s
    app.middleware("http")(count_requests)
    _register_gauges(state)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.server
    _warn_if_open(state.settings)
    state.sessions.on_close.append(lambda session: _session_closed(state, session))
    state.jobs.on_finish.append(lambda job: _job_finished(state, job))
    loader = asyncio.create_task(load_models(state), name="load-models")
    reaper = asyncio.create_task(reap_idle_sessions(state), name="reap-sessions")
    background = [loader, reaper]
    persistence = state.persistence
    if persistence is not None:
        state.sessions.on_close.append(lambda session: persistence.on_close(state, session))
        background.append(asyncio.create_task(persistence.keep_leases(state), name="keep-leases"))
    try:
        yield
    finally:
        await shutdown(state, *background)
        if persistence is not None:
            await persistence.store.close()


def _persistence(settings: Settings) -> Persistence:
    """The state store the settings name (the connection opens on first use)."""
    assert settings.state_store is not None
    return Persistence(
        RedisStateStore(settings.state_store),
        settings.replica_id or default_replica_id(),
        settings.lease_ttl_s,
        settings.checkpoint_every,
        settings.session_ttl_s,
    )


def _warn_if_open(settings: Settings) -> None:
    """Anyone who can reach a non-loopback address could use an open server."""
    if settings.api_keys:
        return
    try:
        is_loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        is_loopback = settings.host == "localhost"
    if not is_loopback:
        log.warning(
            "serving on %s without API keys: anyone who reaches it can use, list and delete every "
            "session and job; set VIDSERVE_API_KEYS",
            settings.host,
        )


async def load_models(state: ServerState) -> None:
    """Load, export if needed, and warm every configured model, side by side; each is served
    as soon as it is ready, and one that fails (or takes long to fetch) says why without
    holding up the others."""
    await asyncio.gather(*(_load(state, served) for served in state.models.values()))


async def _load(state: ServerState, served: ServedModel) -> None:
    try:
        service = await asyncio.to_thread(served.task.load, _load_context(state, served.name))
    except Exception as exc:
        served.state, served.reason = ModelState.FAILED, _reason(exc)
        log.exception("%s failed to load; GET /v1/models/%s says why", served.name, served.name)
        return
    service.scheduler.start()
    _record_engines(state, service.engines, service)
    served.service, served.state = service, ModelState.READY
    log.info("%s: ready on %s", served.name, service.engines.describe())


def _load_context(state: ServerState, model: str) -> LoadContext:
    settings = state.settings
    config = SchedulerConfig(
        settings.max_batch_size, settings.max_queue_delay_ms / 1000, settings.max_queue_size
    )
    metrics = state.metrics
    return LoadContext(settings, model, config, metrics.batch_observer(model), metrics.observe_engine_call)


def _reason(exc: Exception) -> str:
    """What a failed model's state says: an EngineError's own message says what to do."""
    return str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"


async def reap_idle_sessions(state: ServerState) -> None:
    """Expire idle sessions; checked a few times per TTL so expiry is never late by much."""
    interval = min(5.0, state.settings.session_ttl_s / 4)
    while True:
        await asyncio.sleep(interval)
        try:
            for session_id in await state.sessions.expire_idle():
                log.info("session %s expired", session_id)
            for job_id in state.jobs.expire():
                log.info("job %s: result expired and deleted", job_id)
        except Exception:  # why: one bad round must not end expiry for the process's life
            log.exception("expiring idle sessions and old jobs failed; trying again next round")


# why: of the drain timeout, what is kept for closing streams and stopping the engines
# after in-flight frames had their time
CLOSE_RESERVE_S = 1.0


async def drain(state: ServerState) -> None:
    """The first steps of a graceful stop (SIGTERM), before uvicorn closes anything: stop
    admitting (``/readyz`` turns false), let in-flight frames finish, then close every
    session at once, so streams end with 1001. The whole stop, this and ``shutdown`` after
    it, keeps within ``drain_timeout_s`` (``state.stop_deadline``): a compose or Kubernetes
    grace period set to it is never overrun."""
    state.accepting = False
    timeout = state.settings.drain_timeout_s
    state.stop_deadline = time.monotonic() + timeout
    reserve = min(CLOSE_RESERVE_S, timeout / 2)
    log.info("draining: no new sessions, jobs or frames; waiting for in-flight frames")
    # why first: job rows would only delay the live frames in flight
    await _within(state, state.jobs.shutdown(), "cancelling jobs", reserve)
    while _in_flight(state) and _left(state) > reserve:
        await asyncio.sleep(0.02)
    if _in_flight(state):
        log.warning("drain timeout: %d frames still in flight are cancelled", _in_flight(state))
    await _within(state, _close_sessions(state), "closing sessions")
    while state.active_streams and _left(state) > 0:
        await asyncio.sleep(0.02)
    await asyncio.sleep(min(0.1, _left(state)))  # why: let the close frames reach the sockets


async def _close_sessions(state: ServerState) -> None:
    """With a state store, every session is checkpointed and let go (streams end with 1012,
    and any replica resumes them); without, they are closed (1001)."""
    if state.persistence is not None:
        await state.persistence.drain(state)
    else:
        await state.sessions.close_all("closed: server shutting down")


def _left(state: ServerState, keep: float = 0.0) -> float:
    """Seconds of the stop left (all of them when no stop has begun), less ``keep``."""
    if state.stop_deadline is None:
        return float("inf")
    return max(0.0, state.stop_deadline - time.monotonic() - keep)


async def _within(state: ServerState, work: Awaitable[None], what: str, keep: float = 0.0) -> None:
    """``work``, cut short when the stop's time runs out (what it did not finish is abandoned:
    the process is ending)."""
    left = _left(state, keep)
    try:
        await asyncio.wait_for(work, None if left == float("inf") else left)
    except TimeoutError:
        log.warning("stop: %s took longer than VIDSERVE_DRAIN_TIMEOUT_S allows; going on", what)


def _in_flight(state: ServerState) -> int:
    return sum(s.core.in_flight for s in state.sessions.all())


def _services(state: ServerState) -> list[ModelService]:
    return [m.service for m in state.models.values() if m.service is not None]


async def shutdown(state: ServerState, *tasks: asyncio.Task[None]) -> None:
    """Stop admitting, close sessions (their streams end with 1001), drain the schedulers
    (the engines go with the app); within what is left of a drain's time, if one ran."""
    state.accepting = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await _within(state, state.jobs.shutdown(), "cancelling jobs")
    await _within(state, _close_sessions(state), "closing sessions")
    # why kept: a late submit now gets ShuttingDown, not a crash
    stops = [service.scheduler.stop() for service in _services(state)]
    await _within(state, _all(stops), "stopping the engines")


async def _all(works: list[Coroutine[Any, Any, None]]) -> None:
    await asyncio.gather(*works)


async def _session_closed(state: ServerState, session: Session) -> None:
    """A closed session's queued work is dropped between batches, and its memory freed."""
    served = state.models.get(session.model)
    if served is not None and served.service is not None:
        await served.service.scheduler.cancel(session.id)
    state.budget.release(session.id)
    await state.session_task(session).close_session(state, session)


JOBS_PREFIX = "vidserve-jobs-"
OWNER_FILE = "owner.json"  # which process on which host a jobs folder belongs to
# why a day: a folder from before owner files existed is stale by then whoever made it
UNOWNED_STALE_S = 24 * 3600


def _job_store(settings: Settings) -> JobStore:
    """A folder of this process's own under ``job_dir`` (or the system's temp), removed at
    shutdown: jobs do not outlive the process, and a shared ``job_dir`` is never wiped. The
    folders of processes on this host that died without a shutdown (SIGKILL) go first."""
    parent = settings.job_dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(parent)
    root = Path(tempfile.mkdtemp(prefix=JOBS_PREFIX, dir=parent))
    (root / OWNER_FILE).write_text(json.dumps(_this_process()))
    return JobStore(root, settings.max_jobs, settings.max_running_jobs, settings.job_result_ttl_s)


def _this_process(pid: int | None = None) -> dict[str, object]:
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is told apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def remove_orphans(parent: Path) -> list[Path]:
    """Delete the jobs folders under ``parent`` that no living process owns: those of this
    host's processes that are gone, and unowned ones older than a day. Another host's are
    left alone (a shared job_dir)."""
    removed = []
    for folder in parent.glob(f"{JOBS_PREFIX}*"):
        if folder.is_dir() and _is_orphan(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.info("removed %s: its server is gone (uploads and results of its jobs)", folder)
    return removed


def _is_orphan(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return time.time() - folder.stat().st_mtime > UNOWNED_STALE_S
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    return (
        not isinstance(pid, int) or _this_process(pid)["started"] != owner.get("started") or not _alive(pid)
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # why: it exists, it is just another user's
        return True
    return True


async def _job_finished(state: ServerState, job: Job) -> None:
    """A finished job's memory is freed and its queued rows dropped."""
    state.budget.release(job.id)  # why first: the awaits below may be cut short
    served = state.models.get(job.model)
    if served is not None and served.service is not None:
        await served.service.scheduler.cancel(job.id)
    detail = f": {job.error}" if job.error else ""
    log.info(
        "job %s %s after %d of %d frames%s",
        job.id,
        job.state.value,
        job.frames_done,
        job.frames_total,
        detail,
    )


def _record_engines(state: ServerState, engines: EngineSet, service: ModelService) -> None:
    """``vidserve_engine_info`` for every part, and the model's queue depth."""
    for part in engines.parts:
        state.metrics.engine_info.labels(
            part.metric_name,
            part.backend,
            ",".join(part.providers),
            ",".join(part.requested_providers),
            str(part.fell_back).lower(),
        ).set(1)
    state.metrics.queue_depth.labels(engines.model).set_function(lambda: service.scheduler.queue_depth)


def _register_gauges(state: ServerState) -> None:
    for task in state.tasks:
        state.metrics.active_sessions.labels(task.name).set_function(_session_counter(state, task.name))
        task.register_metrics(state.metrics, state)
    for job_state in JobState:
        state.metrics.jobs.labels(job_state.value).set_function(_job_counter(state, job_state))


def _job_counter(state: ServerState, job_state: JobState) -> Callable[[], float]:
    return lambda: sum(job.state is job_state for job in state.jobs.all())


def _session_counter(state: ServerState, task: str) -> Callable[[], float]:
    return lambda: state.sessions.count(task)


GENERIC_ROUTES = ("sessions", "jobs", "models")  # the first path segments under /v1 of every server


def _task_of(path: str, tasks: Sequence[Task[Any, Any]]) -> str | None:
    """The ``task`` label of a request: ``sessions``, ``jobs``, ``models``, or a task's own
    route (``/v1/interpolate``); None for anything else, so labels stay bounded."""
    parts = path.split("/")
    first = parts[2] if len(parts) > 2 and parts[1] == "v1" else None
    return first if first in GENERIC_ROUTES or first in {t.name for t in tasks} else None


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (429, 503):
        return "overloaded"
    return "client_error" if status < 500 else "server_error"


async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Counts requests by task and outcome, and tags the request's log lines with its id."""
    rid = request.headers.get("x-request-id") or secrets.token_hex(8)
    logs.request_id.set(rid[:64])
    response = await call_next(request)
    response.headers["X-Request-ID"] = rid[:64]
    state: ServerState = request.app.state.server
    task = _task_of(request.url.path, state.tasks)
    if task is not None:
        state.metrics.requests.labels(task, _outcome(response.status_code)).inc()
    return response
