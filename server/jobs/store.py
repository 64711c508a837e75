"""Clip jobs: a whole video handed over at once, run in the background, fetched later.

Jobs live only as long as the process: their uploads and results sit in a folder that is
deleted at shutdown, and a restarted server knows none of them. Editors resubmit.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import shutil
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.video import VideoInfo
from server.access import ANONYMOUS, Caller


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for a running slot
    RUNNING = "running"  # decoding, in the engine queue, writing
    DONE = "done"  # the result can be downloaded
    FAILED = "failed"  # stopped on an error, which ``error`` names
    CANCELLED = "cancelled"  # a client or the shutdown cancelled it


FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobNotFound(LookupError):
    """No job has this id (it never existed, was deleted, or its result expired)."""


class JobLimitReached(RuntimeError):
    """``VIDSERVE_MAX_JOBS`` jobs are kept already (429)."""


@dataclass
class Job:
    """One clip job: its input, parameters, progress and result."""

    id: str
    task: str  # the task that runs it (``Task.name``)
    model: str  # registry name of the model it runs on
    params: object  # what the job asked for, in its task's own type (``Task.job_params``)
    folder: Path  # holds the upload and the result; deleted with the job
    source: Path  # the uploaded video
    filename: str  # the upload's own name, for the result's metadata
    info: VideoInfo  # the upload's probe, taken before the job was accepted
    frames_total: int  # frames to process: the container's count (or an estimate) until decoded
    frame_limit: int  # more frames than this fail the job (VIDSERVE_MAX_JOB_FRAMES)
    frames_done: int = 0  # input frames processed so far
    frames_dropped: int = 0  # of those, left out as repeats of the one before (interpolation's dedup)
    warnings: list[str] = field(default_factory=list)  # what the result lacks though it is done
    owner: str | None = None  # the API key's name that submitted it (None: an open server's)
    state: JobState = JobState.QUEUED
    error: str | None = None  # why it failed
    result: Path | None = None  # the finished output, once DONE
    media_type: str | None = None  # the result's content type
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None  # time.time() when it reached a final state
    runner: asyncio.Task[None] | None = None  # the task running it

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    def public(self) -> dict[str, object]:
        """What GET /v1/jobs/{id} shows."""
        elapsed = (self.finished_at or time.time()) - self.started_at if self.started_at else None
        rate = self.frames_done / elapsed if elapsed else None
        left = self.frames_total - self.frames_done
        return {
            "id": self.id,
            "task": self.task,
            "model": self.model,
            "state": self.state.value,
            "progress": {
                "frames_done": self.frames_done,
                "frames_total": self.frames_total,
                "fraction": round(self.frames_done / self.frames_total, 4) if self.frames_total else 0.0,
                "frames_dropped": self.frames_dropped,
                "frames_per_s": round(rate, 2) if rate else None,
                "eta_s": round(left / rate, 1) if rate and self.state is JobState.RUNNING else None,
            },
            "error": self.error,
            "warnings": self.warnings,
            "video": {
                "width": self.info.width,
                "height": self.info.height,
                "fps": float(self.info.fps),
                "frames": self.info.frames,
                "has_audio": self.info.has_audio,
            },
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "url": f"/v1/jobs/{self.id}",
            "result_url": f"/v1/jobs/{self.id}/result" if self.state is JobState.DONE else None,
        }


JobWork = Callable[[Job], Coroutine[Any, Any, None]]


def _eta_s(job: Job) -> float:
    """Seconds until a running job should end, from its rate so far (0 when unknown)."""
    if job.started_at is None or not job.frames_done:
        return 0.0
    rate = job.frames_done / max(time.time() - job.started_at, 1e-3)
    return max(0, job.frames_total - job.frames_done) / rate


class JobStore:
    """The jobs of this process: bounded in number, run a few at a time, results expiring."""

    def __init__(self, root: Path, max_jobs: int, max_running: int, result_ttl_s: float) -> None:
        self.root = root  # every job's folder lives under it; removed at shutdown
        self.max_jobs = max_jobs
        self.result_ttl_s = result_ttl_s
        self._jobs: dict[str, Job] = {}
        self._admitting: dict[str, str | None] = {}  # ids given by new_folder (and owner), not yet started
        # why a semaphore: jobs beyond it wait QUEUED, so a burst of uploads cannot start
        # decoding dozens of videos at once
        self._slots = asyncio.Semaphore(max_running)
        self.on_finish: list[Callable[[Job], Coroutine[Any, Any, None]]] = []

    def new_folder(self, owner: str | None = None) -> tuple[str, Path]:
        """An id and an empty folder for a job about to be uploaded, holding its place in
        ``max_jobs`` (so concurrent uploads beyond it are refused before they are copied);
        then ``start`` or ``abandon`` it."""
        self.expire()
        held = len(self._jobs) + len(self._admitting)
        if held >= self.max_jobs:
            raise JobLimitReached(
                f"{held} jobs are kept or being uploaded (VIDSERVE_MAX_JOBS={self.max_jobs}); "
                "delete finished ones or try again later"
            )
        job_id = "job_" + secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir(parents=True)
        self._admitting[job_id] = owner
        return job_id, folder

    def abandon(self, job_id: str, folder: Path) -> None:
        """A job refused after ``new_folder``: its place and its files go."""
        self._admitting.pop(job_id, None)
        shutil.rmtree(folder, ignore_errors=True)

    def start(self, job: Job, work: JobWork) -> None:
        """Accept ``job`` (its place held by ``new_folder``) and run ``work`` once a slot is free."""
        self._admitting.pop(job.id, None)
        self._jobs[job.id] = job
        job.runner = asyncio.get_running_loop().create_task(self._run(job, work), name=job.id)

    async def _run(self, job: Job, work: JobWork) -> None:
        try:
            async with self._slots:
                job.state, job.started_at = JobState.RUNNING, time.time()
                await work(job)
                job.state = JobState.DONE
        except asyncio.CancelledError:
            job.state = JobState.CANCELLED
            job.error = job.error or "cancelled"
        except Exception as exc:  # a job's failure is its own; it never reaches the server
            job.state, job.error = JobState.FAILED, str(exc) or type(exc).__name__
        finally:
            job.finished_at = time.time()
            for callback in self.on_finish:
                await callback(job)

    def get(self, job_id: str, caller: Caller = ANONYMOUS) -> Job:
        """A job of ``caller``'s; another key's is ``JobNotFound`` as well."""
        job = self._jobs.get(job_id)
        if job is None or not caller.owns(job.owner):
            raise JobNotFound(f"no job {job_id[:64]!r} (results are kept for {self.result_ttl_s:g} s)")
        return job

    def all(self, caller: Caller = ANONYMOUS) -> list[Job]:
        return [job for job in self._jobs.values() if caller.owns(job.owner)]

    def next_free_s(self, owner: str | None) -> float:
        """When one of ``owner``'s jobs next gives its place back, in seconds from now: the
        soonest finished result to expire, else the result TTL after the soonest running job
        could end (an estimate from its progress; unknown counts as now)."""
        now = time.time()
        mine = [j for j in self._jobs.values() if j.owner == owner]
        finished = [j.finished_at + self.result_ttl_s - now for j in mine if j.finished_at is not None]
        if finished:
            return max(0.0, min(finished))
        return self.result_ttl_s + min((_eta_s(j) for j in mine), default=0.0)

    def owned_by(self, owner: str | None) -> int:
        """Jobs one key holds, those being uploaded included."""
        uploading = sum(1 for o in self._admitting.values() if o == owner)
        return uploading + sum(1 for j in self._jobs.values() if j.owner == owner)

    async def cancel(
        self, job_id: str, reason: str = "cancelled by the client", caller: Caller = ANONYMOUS
    ) -> Job:
        """Stop a queued or running job; its files go at once."""
        job = self.get(job_id, caller)
        # why is_finished too: a job in its finish callbacks is over; cancelling those would
        # skip the release of its memory
        if job.runner is not None and not job.runner.done() and not job.is_finished:
            job.error = reason
            job.runner.cancel()
            await asyncio.gather(job.runner, return_exceptions=True)
        return job

    async def delete(self, job_id: str, caller: Caller = ANONYMOUS) -> Job:
        """Cancel the job if it still runs, then forget it and delete its files."""
        job = await self.cancel(job_id, caller=caller)
        self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)
        return job

    def expire(self) -> list[str]:
        """Forget finished jobs older than the result TTL, and delete their files."""
        now = time.time()
        expired = [
            j.id
            for j in self._jobs.values()
            if j.finished_at is not None and now - j.finished_at > self.result_ttl_s
        ]
        for job_id in expired:
            shutil.rmtree(self._jobs.pop(job_id).folder, ignore_errors=True)
        return expired

    async def shutdown(self) -> None:
        """Cancel every job and delete every file: jobs do not outlive the process."""
        cancels = [self.cancel(job.id, "cancelled: server shutting down") for job in self.all()]
        await asyncio.gather(*cancels, return_exceptions=True)
        self._jobs.clear()
        shutil.rmtree(self.root, ignore_errors=True)
