"""The FastAPI app: routes, error handlers, and the life cycle (load engines in the
background, expire idle sessions, shut down in order)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from models.rife.export import part_model
from models.weights.registry import get_entry
from models.xmem.inference_core import XMemState
from server import __version__, logs
from server.api import demo, deps, errors, health, interpolate, jobs, segment, sessions, stream
from server.engines import describe_runner, load_rife_engine, load_xmem_engine_set
from server.jobs.store import Job, JobState, JobStore
from server.metrics import Metrics
from server.scheduler import SchedulerConfig
from server.sessions import MemoryBudget, SegmentationSession, SessionStore
from server.sessions.store import Session
from server.settings import Settings
from server.state import ServerState
from server.tasks.interpolation import InterpolationService
from server.tasks.segmentation import SegmentationService

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServerState(
        settings,
        Metrics(),
        SessionStore(settings.max_sessions, settings.session_ttl_s),
        MemoryBudget(settings.memory_budget_bytes),
        _job_store(settings),
    )
    app = FastAPI(
        title="vidserve",
        version=__version__,
        summary="Real-time video inference: RIFE frame interpolation and XMem segmentation",
        lifespan=lifespan,
    )
    app.state.server = state
    for module in (health, interpolate, sessions, segment, stream, jobs, demo):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(deps.BodyLimit)
    app.middleware("http")(count_requests)
    _register_gauges(state)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.server
    state.sessions.on_close.append(lambda session: _cancel_queued(state, session))
    state.jobs.on_finish.append(lambda job: _job_finished(state, job))
    loader = asyncio.create_task(load_models(state), name="load-models")
    reaper = asyncio.create_task(reap_idle_sessions(state), name="reap-sessions")
    try:
        yield
    finally:
        await shutdown(state, loader, reaper)


async def load_models(state: ServerState) -> None:
    """Load, export if needed, and warm every configured engine; then report ready."""
    settings = state.settings
    config = SchedulerConfig(
        settings.max_batch_size, settings.max_queue_delay_ms / 1000, settings.max_queue_size
    )
    try:
        for model in settings.models:
            if get_entry(model).family == "xmem":
                await _load_segmentation(state, model, config)
            else:
                await _load_interpolation(state, model, config)
    except Exception as exc:
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("loading engines failed; /readyz reports it")
        return
    state.ready = True


async def _load_interpolation(state: ServerState, model: str, config: SchedulerConfig) -> None:
    observe = state.metrics.observe_engine_call
    engine, spec = await asyncio.to_thread(load_rife_engine, state.settings, model, observe)
    service = InterpolationService(spec, engine, config, state.metrics.batch_observer(model))
    service.scheduler.start()
    state.interpolation[model] = service
    _record_engine(state, model, engine.describe(), lambda: service.scheduler.queue_depth)
    if engine.encoder is not None:
        encoder = part_model(model, "encoder")
        _record_engine(state, encoder, describe_runner(engine.encoder), lambda: 0)  # why 0: never queued


async def _load_segmentation(state: ServerState, model: str, config: SchedulerConfig) -> None:
    observe = state.metrics.observe_engine_call
    engines, _ = await asyncio.to_thread(load_xmem_engine_set, state.settings, model, observe)
    service = SegmentationService(model, engines, config, state.metrics.batch_observer(model))
    service.scheduler.start()
    state.segmentation[model] = service
    _record_engine(state, model, describe_runner(engines.encode_key), lambda: service.scheduler.queue_depth)


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


async def drain(state: ServerState) -> None:
    """The first steps of a graceful stop (SIGTERM), before uvicorn closes anything:
    stop admitting (``/readyz`` turns false), let in-flight frames finish within
    ``drain_timeout_s``, then close every session, so streams end with 1001."""
    state.accepting = False
    log.info("draining: no new sessions, jobs or frames; waiting for in-flight frames")
    await state.jobs.shutdown()  # why first: job rows would only delay the live frames in flight
    deadline = time.monotonic() + state.settings.drain_timeout_s
    while _in_flight(state) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if _in_flight(state):
        log.warning("drain timeout: %d frames still in flight are cancelled", _in_flight(state))
    await state.sessions.close_all("closed: server shutting down")
    deadline = time.monotonic() + 5
    while state.active_streams and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # why: let the close frames reach the sockets before uvicorn stops


def _in_flight(state: ServerState) -> int:
    return sum(s.core.in_flight for s in state.sessions.all())


async def shutdown(state: ServerState, *tasks: asyncio.Task[None]) -> None:
    """Stop admitting, close sessions (their streams end with 1001), drain queues, free engines."""
    state.accepting = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await state.jobs.shutdown()
    await state.sessions.close_all("closed: server shutting down")
    for rife in state.interpolation.values():
        await rife.scheduler.stop()
    for xmem in state.segmentation.values():
        await xmem.scheduler.stop()
    state.interpolation.clear()
    state.segmentation.clear()
    state.ready = False


async def _cancel_queued(state: ServerState, session: Session) -> None:
    """A closed session's queued work is dropped between batches, and its memory freed."""
    if session.model in state.interpolation:
        await state.interpolation[session.model].scheduler.cancel(session.id)
    if session.model in state.segmentation:
        await state.segmentation[session.model].scheduler.cancel(session.id)
    state.budget.release(session.id)
    if isinstance(session, SegmentationSession):
        # why now: drop the tensors, not when the last reference goes; a frame still on the
        # engine works on its own copy, and run_frame does not adopt it into a closed session
        session.xmem = XMemState.fresh(session.config)


def _job_store(settings: Settings) -> JobStore:
    """A folder of this process's own under ``job_dir`` (or the system's temp), removed at
    shutdown: jobs do not outlive the process, and a shared ``job_dir`` is never wiped."""
    parent = settings.job_dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="vidserve-jobs-", dir=parent))
    return JobStore(root, settings.max_jobs, settings.max_running_jobs, settings.job_result_ttl_s)


async def _job_finished(state: ServerState, job: Job) -> None:
    """A finished job's memory is freed and its queued rows dropped."""
    state.budget.release(job.id)  # why first: the awaits below may be cut short
    for service in (state.interpolation.get(job.model), state.segmentation.get(job.model)):
        if service is not None:
            await service.scheduler.cancel(job.id)
    detail = f": {job.error}" if job.error else ""
    log.info(
        "job %s %s after %d of %d frames%s",
        job.id,
        job.state.value,
        job.frames_done,
        job.frames_total,
        detail,
    )


def _record_engine(state: ServerState, model: str, facts: dict[str, Any], depth: Callable[[], int]) -> None:
    state.metrics.engine_info.labels(
        model,
        facts["backend"],
        ",".join(facts["providers"]),
        ",".join(facts["requested_providers"]),
        str(facts["fell_back"]).lower(),
    ).set(1)
    state.metrics.queue_depth.labels(model).set_function(depth)


def _register_gauges(state: ServerState) -> None:
    for task in ("interpolate", "segment"):
        state.metrics.active_sessions.labels(task).set_function(_session_counter(state, task))
    for tier in ("working", "long_term", "sensory"):
        state.metrics.memory_bytes.labels(tier).set_function(_tier_bytes(state, tier))
    state.metrics.memory_reserved.set_function(lambda: state.budget.reserved_bytes)
    for job_state in JobState:
        state.metrics.jobs.labels(job_state.value).set_function(_job_counter(state, job_state))


def _job_counter(state: ServerState, job_state: JobState) -> Callable[[], float]:
    return lambda: sum(job.state is job_state for job in state.jobs.all())


def _tier_bytes(state: ServerState, tier: str) -> Callable[[], float]:
    def total() -> float:
        sessions = [s for s in state.sessions.all() if isinstance(s, SegmentationSession)]
        return sum(s.memory_bytes()[tier] for s in sessions)

    return total


def _session_counter(state: ServerState, task: str) -> Callable[[], float]:
    return lambda: state.sessions.count(task)


def _task_of(path: str) -> str | None:
    if path.startswith("/v1/interpolate"):
        return "interpolate"
    if path.startswith("/v1/sessions"):
        return "sessions"
    if path.startswith("/v1/jobs"):
        return "jobs"
    return None


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
    task = _task_of(request.url.path)
    if task is not None:
        request.app.state.server.metrics.requests.labels(task, _outcome(response.status_code)).inc()
    return response
