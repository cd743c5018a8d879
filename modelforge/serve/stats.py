"""Triton-style statistics (``GET v2/models/{m}/stats``) and Prometheus metrics.

Counts are faithful: ``inference_count`` is rows inferred, ``execution_count`` session runs
(one per batch), ``success``/``fail`` requests with their total durations; ``queue`` is the
time from enqueue to the start of the run, ``compute_infer`` the run itself (the batch's
duration, for each request in it), ``compute_input``/``compute_output`` decoding and
encoding. All times are nanoseconds, as Triton reports them.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1,
    5,
)
_NS_BUCKETS = tuple(int(b * 1e9) for b in _BUCKETS)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LABELS = ["model", "version"]


class _Histogram:
    """Bucket counts and a sum, kept as plain integers (exported at scrape time).

    ``bounds`` are in the unit observed (nanoseconds, rows); ``edges`` the exported ones."""

    __slots__ = ("bounds", "edges", "counts", "total")

    def __init__(self, bounds: tuple[int, ...], edges: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.edges = edges
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0

    def observe(self, value: int) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        from prometheus_client.utils import floatToGoString

        out: list[tuple[str, float]] = []
        running = 0
        for edge, n in zip(self.edges, self.counts, strict=False):
            running += n
            out.append((floatToGoString(edge), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class Metrics:
    """The Prometheus metrics of one server, in its own registry (embedding apps keep theirs).

    The request path only bumps integers in each :class:`VersionStats`; this collector turns
    them into Prometheus families when ``/metrics`` is scraped (prometheus-client's own
    ``Counter``/``Histogram`` objects cost a lock and a label lookup per update: a dozen per
    request). Versions stay listed after they are unloaded, as counters must.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.versions: dict[tuple[str, int], VersionStats] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def version_stats(self, name: str, version: int) -> VersionStats:
        """The counters of a model version: the same object when a version is loaded again
        (after an unload), so its counters go on instead of appearing twice."""
        key = (name, version)
        stats = self.versions.get(key)
        if stats is None:
            stats = self.versions[key] = VersionStats(name, version)
        return stats

    def describe(self) -> list[Any]:
        return []  # families are only known at scrape time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def counter(name: str, doc: str, extra: list[str] | None = None) -> Any:
            return CounterMetricFamily(name, doc, labels=[*_LABELS, *(extra or [])])

        success = counter("modelforge_inference_request_success", "Successful inference requests")
        failure = counter(
            "modelforge_inference_request_failure",
            "Failed inference requests (by HTTP status)",
            ["status"],
        )
        rows = counter("modelforge_inference_count", "Rows inferred")
        execs = counter("modelforge_inference_exec_count", "Session runs (batches)")
        hists = {
            key: HistogramMetricFamily(name, doc, labels=_LABELS)
            for key, name, doc in (
                ("request", "modelforge_request_duration_seconds", "Request duration, end to end"),
                ("queue", "modelforge_queue_duration_seconds", "Time spent queued before the run"),
                (
                    "compute",
                    "modelforge_compute_duration_seconds",
                    "onnxruntime run duration per batch",
                ),
                ("batch", "modelforge_batch_size", "Rows per session run"),
            )
        }
        gauges = {
            key: GaugeMetricFamily(name, doc, labels=_LABELS)
            for key, name, doc in (
                ("in_flight", "modelforge_requests_in_flight", "Requests being served"),
                ("busy", "modelforge_instances_busy", "Session instances running a batch"),
                ("queued", "modelforge_queue_size", "Requests waiting for an instance"),
            )
        }
        for vs in list(self.versions.values()):
            labels = [vs.name, str(vs.version)]
            with vs._lock:
                success.add_metric(labels, vs.stats["success"]["count"])
                for status, n in sorted(vs.failures.items()):
                    failure.add_metric([*labels, str(status)], n)
                rows.add_metric(labels, vs.inference_count)
                execs.add_metric(labels, vs.execution_count)
                for key, h in vs.histograms.items():
                    scale = 1.0 if key == "batch" else 1e-9
                    hists[key].add_metric(labels, h.buckets(), h.total * scale)
                in_flight = vs.in_flight
            gauges["in_flight"].add_metric(labels, in_flight)
            gauges["busy"].add_metric(labels, vs.busy())
            gauges["queued"].add_metric(labels, vs.queued())
        yield from (success, failure, rows, execs, *hists.values(), *gauges.values())

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _pair() -> dict[str, int]:
    return {"count": 0, "ns": 0}


def _zero() -> int:
    return 0


class VersionStats:
    """Counters of one served model version, updated from the loop and worker threads."""

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self._lock = threading.Lock()
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        self.in_flight = 0  # requests being served: enter() / leave()
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
        self.failures: dict[int, int] = {}
        self.batches: dict[int, dict[str, dict[str, int]]] = {}
        self.histograms = {
            "request": _Histogram(_NS_BUCKETS, _BUCKETS),
            "queue": _Histogram(_NS_BUCKETS, _BUCKETS),
            "compute": _Histogram(_NS_BUCKETS, _BUCKETS),
            "batch": _Histogram(_BATCH_BUCKETS, _BATCH_BUCKETS),
        }
        self.busy: Callable[[], int] = _zero
        self.queued: Callable[[], int] = _zero

    def enter(self) -> None:
        """A request of this version started (HTTP on the loop, gRPC on its threads)."""
        with self._lock:
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def watch(self, busy: Callable[[], int], queued: Callable[[], int]) -> None:
        """Gauges read at scrape time from the batcher."""
        self.busy, self.queued = busy, queued

    def batch_ran(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One session run of ``rows`` rows (called from the worker thread): ``input_ns``
        merging the requests' inputs, ``infer_ns`` the run, ``output_ns`` splitting."""
        with self._lock:
            self.execution_count += 1
            b = self.batches.get(rows)
            if b is None:
                b = self.batches[rows] = {
                    "compute_input": _pair(),
                    "compute_infer": _pair(),
                    "compute_output": _pair(),
                }
            p = b["compute_input"]
            p["count"] += 1
            p["ns"] += input_ns
            p = b["compute_infer"]
            p["count"] += 1
            p["ns"] += infer_ns
            p = b["compute_output"]
            p["count"] += 1
            p["ns"] += output_ns
            self.histograms["compute"].observe(infer_ns)
            self.histograms["batch"].observe(rows)

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
            p = s["success" if ok else "fail"]
            p["count"] += 1
            p["ns"] += total_ns
            if not ok:
                self.failures[status] = self.failures.get(status, 0) + 1
                return
            self.inference_count += rows
            self.last_inference = time.time_ns() // 1_000_000
            for k, ns in (
                ("queue", queue_ns),
                ("compute_input", input_ns),
                ("compute_infer", infer_ns),
                ("compute_output", output_ns),
            ):
                p = s[k]
                p["count"] += 1
                p["ns"] += ns
            self.histograms["request"].observe(total_ns)
            self.histograms["queue"].observe(queue_ns)

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
