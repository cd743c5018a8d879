"""Bench results: frozen dataclasses with ``to_dict()`` (the JSON form, rounded for
reading) and ``BenchReport.from_raw()``, which rebuilds a report exactly from
``dataclasses.asdict(report)`` as it comes back, in JSON, from the guarded child that ran
the benchmark (:func:`modelforge.bench.run_bench` with ``isolate=True``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelforge.bench.env import Environment
from modelforge.bench.stats import Histogram, LatencyStats, RoundStats, rounded


@dataclass(frozen=True)
class BatchResult:
    """Steady state at one batch size for one target."""

    batch_size: int
    rows_per_run: int
    input_shapes: dict[str, list[int]]
    latency_ms: LatencyStats  # all timed runs pooled
    median_latency_rounds_ms: RoundStats  # per round: median latency
    throughput_rounds: RoundStats  # per round: rows per second
    histogram: Histogram

    @property
    def throughput(self) -> float:
        return self.throughput_rounds.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "rows_per_run": self.rows_per_run,
            "input_shapes": self.input_shapes,
            "latency_ms": self.latency_ms.to_dict(),
            "median_latency_rounds_ms": self.median_latency_rounds_ms.to_dict(),
            "throughput_rows_per_s": self.throughput_rounds.to_dict(),
            "histogram": self.histogram.to_dict(),
        }


@dataclass(frozen=True)
class TargetResult:
    """One model on one execution provider."""

    model: str  # "model" or "compare"
    ref: str
    path: str
    provider: str
    providers_used: list[str]
    session: dict[str, Any]  # the SessionConfig: threads, opt level, provider options
    upgraded_to_opset: int | None
    inputs: dict[str, Any]
    load_ms: RoundStats
    session_ms: RoundStats
    cold_start_ms: RoundStats  # load + session creation
    first_inference_ms: RoundStats
    batches: list[BatchResult]

    def batch(self, size: int) -> BatchResult | None:
        return next((b for b in self.batches if b.batch_size == size), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ref": self.ref,
            "path": self.path,
            "provider": self.provider,
            "providers_used": self.providers_used,
            "session": self.session,
            "upgraded_to_opset": self.upgraded_to_opset,
            "inputs": self.inputs,
            "cold_start_ms": {
                "load": self.load_ms.to_dict(),
                "session": self.session_ms.to_dict(),
                "total": self.cold_start_ms.to_dict(),
            },
            "first_inference_ms": self.first_inference_ms.to_dict(),
            "batches": [b.to_dict() for b in self.batches],
        }


@dataclass(frozen=True)
class Ratio:
    """compare / model for one metric, measured side by side (>1: compare is larger)."""

    provider: str
    metric: str
    batch_size: int | None
    model: float
    compare: float
    per_round: RoundStats | None

    @property
    def ratio(self) -> float:
        if self.per_round is not None:
            return self.per_round.median
        return self.compare / self.model if self.model else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "metric": self.metric,
            "batch_size": self.batch_size,
            "model": rounded(self.model),
            "compare": rounded(self.compare),
            "ratio": round(self.ratio, 4),
            "per_round": None if self.per_round is None else self.per_round.to_dict(),
        }


@dataclass(frozen=True)
class BenchReport:
    model: dict[str, Any]
    compare: dict[str, Any] | None
    settings: dict[str, Any]
    environment: Environment
    results: list[TargetResult]
    ratios: list[Ratio]
    untrustworthy: list[str]  # metrics whose per-round spread is above the limit
    seconds: float

    @classmethod
    def from_raw(cls, d: dict[str, Any]) -> BenchReport:
        """Rebuild a report from ``dataclasses.asdict(report)`` (after a JSON round trip)."""
        return cls(
            model=d["model"],
            compare=d.get("compare"),
            settings=d["settings"],
            environment=_environment(d["environment"]),
            results=[_target(r) for r in d["results"]],
            ratios=[_ratio(r) for r in d["ratios"]],
            untrustworthy=list(d["untrustworthy"]),
            seconds=float(d["seconds"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "compare": self.compare,
            "settings": self.settings,
            "environment": self.environment.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "ratios": [r.to_dict() for r in self.ratios],
            "untrustworthy": self.untrustworthy,
            "seconds": round(self.seconds, 3),
        }


def _rounds(d: dict[str, Any]) -> RoundStats:
    return RoundStats(tuple(float(v) for v in d["values"]))


def _batch(d: dict[str, Any]) -> BatchResult:
    h = d["histogram"]
    return BatchResult(
        batch_size=int(d["batch_size"]),
        rows_per_run=int(d["rows_per_run"]),
        input_shapes={str(k): list(v) for k, v in d["input_shapes"].items()},
        latency_ms=LatencyStats(**d["latency_ms"]),
        median_latency_rounds_ms=_rounds(d["median_latency_rounds_ms"]),
        throughput_rounds=_rounds(d["throughput_rounds"]),
        histogram=Histogram(tuple(h["edges"]), tuple(h["counts"]), int(h["overflow"])),
    )


def _target(d: dict[str, Any]) -> TargetResult:
    return TargetResult(
        model=d["model"],
        ref=d["ref"],
        path=d["path"],
        provider=d["provider"],
        providers_used=list(d["providers_used"]),
        session=d["session"],
        upgraded_to_opset=d["upgraded_to_opset"],
        inputs=d["inputs"],
        load_ms=_rounds(d["load_ms"]),
        session_ms=_rounds(d["session_ms"]),
        cold_start_ms=_rounds(d["cold_start_ms"]),
        first_inference_ms=_rounds(d["first_inference_ms"]),
        batches=[_batch(b) for b in d["batches"]],
    )


def _ratio(d: dict[str, Any]) -> Ratio:
    per_round = d.get("per_round")
    return Ratio(
        **{k: v for k, v in d.items() if k != "per_round"},
        per_round=None if per_round is None else _rounds(per_round),
    )


def _environment(d: dict[str, Any]) -> Environment:
    load = d.get("load_average")
    return Environment(
        **{k: v for k, v in d.items() if k not in ("load_average", "available_providers")},
        load_average=None if load is None else (float(load[0]), float(load[1]), float(load[2])),
        available_providers=tuple(d.get("available_providers") or ()),
    )
