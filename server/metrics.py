"""Prometheus metrics, named after Triton's (``nv_inference_*`` → ``vidserve_*``).

Each app owns its registry, so several servers in one process (the tests) do not collide.
A task adds its own series to it (``Task.register_metrics``).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.scheduler import BatchStats

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


# why up to 1 GiB: a 480p segmentation session with full memory is about 100-150 MiB per
# 2 objects (bench/checkpoint.py); an interpolation session is one padded frame
CHECKPOINT_BUCKETS = tuple(float(2**k) for k in range(16, 31, 2))


class Metrics:
    """Every series the server exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vidserve_requests", "REST requests and session creations by task and outcome",
            ["task", "outcome"], registry=r,
        )  # fmt: skip
        self.frames = Counter(
            "vidserve_frames",
            "Frames received by sessions, by task and outcome",
            ["task", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "vidserve_pending_request_count",
            "Rows queued for an engine (Triton: nv_inference_pending_request_count)",
            ["model"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "vidserve_batch_size", "Rows per engine call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.exec_count = Counter(
            "vidserve_inference_exec_count",
            "Engine calls (Triton: nv_inference_exec_count)",
            ["model"],
            registry=r,
        )
        self.inference_count = Counter(
            "vidserve_inference_count", "Rows run (Triton: nv_inference_count)", ["model"], registry=r
        )
        self.failures = Counter(
            "vidserve_inference_failure", "Engine calls that raised", ["model"], registry=r
        )
        self.compute_seconds = Histogram(
            "vidserve_compute_infer_duration_seconds",
            "Engine call latency (Triton: nv_inference_compute_infer_duration_us)",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.active_sessions = Gauge("vidserve_active_sessions", "Open sessions", ["task"], registry=r)
        self.jobs = Gauge("vidserve_jobs", "Clip jobs held, by state", ["state"], registry=r)
        self.engine_info = Gauge(
            "vidserve_engine_info", "1 per loaded engine; provider is what really runs",
            ["model", "backend", "provider", "requested", "fell_back"], registry=r,
        )  # fmt: skip

        # with a state store (server/sessions/persist.py)
        self.checkpoints = Counter(
            "vidserve_session_checkpoints", "Session states written to the state store, by task and outcome",
            ["task", "outcome"], registry=r,
        )  # fmt: skip
        self.checkpoint_bytes = Histogram(
            "vidserve_session_checkpoint_bytes", "Size of each session state written, by task",
            ["task"], buckets=CHECKPOINT_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_seconds = Histogram(
            "vidserve_session_checkpoint_seconds", "Packing and writing one session state, by task",
            ["task"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.restores = Counter(
            "vidserve_session_restores", "Sessions restored from the state store, by task",
            ["task"], registry=r,
        )  # fmt: skip

        # each task's own series, by task name (``Task.register_metrics``)
        self.tasks: dict[str, object] = {}

    def observe_engine_call(self, name: str, rows: int, seconds: float) -> None:
        """One call of a part of a model of several parts, below the scheduler's batches."""
        self.exec_count.labels(name).inc()
        self.inference_count.labels(name).inc(rows)
        self.batch_size.labels(name).observe(rows)
        self.compute_seconds.labels(name).observe(seconds)

    def batch_observer(self, model: str) -> Callable[[BatchStats], None]:
        def observe(stats: BatchStats) -> None:
            self.exec_count.labels(model).inc()
            self.batch_size.labels(model).observe(stats.size)
            self.compute_seconds.labels(model).observe(stats.seconds)
            if stats.ok:
                self.inference_count.labels(model).inc(stats.size)
            else:
                self.failures.labels(model).inc()

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
