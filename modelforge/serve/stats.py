"""Triton-style statistics (``GET v2/models/{m}/stats``) and Prometheus metrics.

Counts are faithful: ``inference_count`` is rows inferred, ``execution_count`` session runs
(one per batch), ``success``/``fail`` requests with their total durations; ``queue`` is the
time from enqueue to the start of the run, ``compute_infer`` the run itself (the batch's
duration, for each request in it), ``compute_input``/``compute_output`` decoding and
encoding. All times are nanoseconds, as Triton reports them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The Prometheus metrics of one server (its own registry: embedding apps keep theirs)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        r = self.registry
        self.success = Counter(
            "modelforge_inference_request_success",
            "Successful inference requests",
            labels,
            registry=r,
        )
        self.failure = Counter(
            "modelforge_inference_request_failure",
            "Failed inference requests (by HTTP status)",
            [*labels, "status"],
            registry=r,
        )
        self.rows = Counter("modelforge_inference_count", "Rows inferred", labels, registry=r)
        self.executions = Counter(
            "modelforge_inference_exec_count", "Session runs (batches)", labels, registry=r
        )
        self.request = Histogram(
            "modelforge_request_duration_seconds",
            "Request duration, end to end",
            labels,
            buckets=_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "modelforge_queue_duration_seconds",
            "Time spent queued before the run",
            labels,
            buckets=_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "modelforge_compute_duration_seconds",
            "onnxruntime run duration per batch",
            labels,
            buckets=_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "modelforge_batch_size",
            "Rows per session run",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "modelforge_requests_in_flight", "Requests being served", labels, registry=r
        )
        self.busy = Gauge(
            "modelforge_instances_busy",
            "Session instances running a batch",
            labels,
            registry=r,
        )
        self.queued = Gauge(
            "modelforge_queue_size", "Requests waiting for an instance", labels, registry=r
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _pair() -> dict[str, int]:
    return {"count": 0, "ns": 0}


class VersionStats:
    """Counters of one served model version, updated from the loop and worker threads."""

    def __init__(self, name: str, version: int, metrics: Metrics | None) -> None:
        self.name = name
        self.version = version
        self._lock = threading.Lock()
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        self.stats = {
            k: _pair()
            for k in (
                "success",
                "fail",
                "queue",
                "compute_input",
                "compute_infer",
                "compute_output",
            )
        }
        self.batches: dict[int, dict[str, dict[str, int]]] = {}
        labels = (name, str(version))
        self._metrics = metrics
        if metrics is not None:
            self._success = metrics.success.labels(*labels)
            self._rows = metrics.rows.labels(*labels)
            self._exec = metrics.executions.labels(*labels)
            self._request = metrics.request.labels(*labels)
            self._queue = metrics.queue.labels(*labels)
            self._compute = metrics.compute.labels(*labels)
            self._batch = metrics.batch.labels(*labels)
            self.in_flight = metrics.in_flight.labels(*labels)

    def watch(self, busy: Any, queued: Any) -> None:
        """Gauges read at scrape time from the batcher (callables returning numbers)."""
        if self._metrics is not None:
            labels = (self.name, str(self.version))
            self._metrics.busy.labels(*labels).set_function(busy)
            self._metrics.queued.labels(*labels).set_function(queued)

    def batch_ran(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One session run of ``rows`` rows (called from the worker thread): ``input_ns``
        merging the requests' inputs, ``infer_ns`` the run, ``output_ns`` splitting."""
        with self._lock:
            self.execution_count += 1
            b = self.batches.setdefault(
                rows,
                {"compute_input": _pair(), "compute_infer": _pair(), "compute_output": _pair()},
            )
            for key, ns in (
                ("compute_input", input_ns),
                ("compute_infer", infer_ns),
                ("compute_output", output_ns),
            ):
                b[key]["count"] += 1
                b[key]["ns"] += ns
        if self._metrics is not None:
            self._exec.inc()
            self._compute.observe(infer_ns / 1e9)
            self._batch.observe(rows)

    def request_done(
        self,
        ok: bool,
        rows: int,
        total_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
        status: int = 200,
    ) -> None:
        with self._lock:
            s = self.stats
            key = "success" if ok else "fail"
            s[key]["count"] += 1
            s[key]["ns"] += total_ns
            if ok:
                self.inference_count += rows
                self.last_inference = time.time_ns() // 1_000_000
                for k, ns in (
                    ("queue", queue_ns),
                    ("compute_input", input_ns),
                    ("compute_infer", infer_ns),
                    ("compute_output", output_ns),
                ):
                    s[k]["count"] += 1
                    s[k]["ns"] += ns
        m = self._metrics
        if m is None:
            return
        if ok:
            self._success.inc()
            self._rows.inc(rows)
            self._request.observe(total_ns / 1e9)
            self._queue.observe(queue_ns / 1e9)
        else:
            m.failure.labels(self.name, str(self.version), str(status)).inc()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "version": str(self.version),
                "last_inference": self.last_inference,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    **{k: dict(v) for k, v in self.stats.items()},
                    "cache_hit": _pair(),
                    "cache_miss": _pair(),
                },
                "batch_stats": [
                    {"batch_size": size, **{k: dict(v) for k, v in b.items()}}
                    for size, b in sorted(self.batches.items())
                ],
            }
