"""Statistics for benchmark samples: percentiles, per-round spread, histograms.

Pure Python on lists of floats (milliseconds), so that it is cheap to import and to test.

The spread rule (documented in docs/bench.md): a metric measured in R >= 3 interleaved
rounds has ``spread = (max - min) / median`` of its per-round values. When the spread is
above :data:`SPREAD_LIMIT` the report marks the metric ``trustworthy: false`` ("spread too
wide to trust"): something else on the machine changed the speed between rounds, and
differences smaller than the spread are noise. With fewer than 3 rounds nothing can be
said and ``trustworthy`` is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SPREAD_LIMIT = 0.10  # (max - min) / median of per-round values
MIN_ROUNDS_FOR_SPREAD = 3
HISTOGRAM_BINS = 10
OVERFLOW_MIN_SAMPLES = 100  # below this, the chart spans min..max


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of sorted values; q in [0, 100]."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


def rounded(x: float) -> float:
    """Round for reports: 4 significant digits are more than timing noise allows."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, max(0, 3 - math.floor(math.log10(abs(x)))))


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of all timed runs of one slot (pooled over rounds), in milliseconds."""

    count: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    stdev: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min": rounded(self.min),
            "p50": rounded(self.p50),
            "p90": rounded(self.p90),
            "p99": rounded(self.p99),
            "max": rounded(self.max),
            "mean": rounded(self.mean),
            "stdev": rounded(self.stdev),
        }


def latency_stats(samples: Sequence[float]) -> LatencyStats:
    s = sorted(samples)
    n = len(s)
    mean = math.fsum(s) / n
    var = math.fsum((x - mean) ** 2 for x in s) / (n - 1) if n > 1 else 0.0
    return LatencyStats(
        count=n,
        min=s[0],
        p50=percentile(s, 50),
        p90=percentile(s, 90),
        p99=percentile(s, 99),
        max=s[-1],
        mean=mean,
        stdev=math.sqrt(var),
    )


@dataclass(frozen=True)
class RoundStats:
    """One value per interleaved round, and what their spread says about trust."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def median(self) -> float:
        return median(self.values)

    @property
    def spread(self) -> float | None:
        med = self.median
        if len(self.values) < 2 or med == 0:
            return None
        return (self.max - self.min) / abs(med)

    @property
    def trustworthy(self) -> bool | None:
        if len(self.values) < MIN_ROUNDS_FOR_SPREAD:
            return None
        spread = self.spread
        return spread is not None and spread <= SPREAD_LIMIT

    def to_dict(self) -> dict[str, Any]:
        spread = self.spread
        return {
            "min": rounded(self.min),
            "median": rounded(self.median),
            "max": rounded(self.max),
            "rounds": [rounded(v) for v in self.values],
            "spread": None if spread is None else round(spread, 4),
            "trustworthy": self.trustworthy,
        }


@dataclass(frozen=True)
class Histogram:
    """Counts of samples in equal-width bins from the minimum to the p99 value.

    ``edges`` has one more entry than ``counts``; samples above the last edge (the slowest
    1 %) are counted in ``overflow`` so that one outlier does not squash the chart. With
    fewer than 100 samples the bins span min..max and ``overflow`` is 0.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    overflow: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges_ms": [rounded(e) for e in self.edges],
            "counts": list(self.counts),
            "overflow": self.overflow,
        }


def histogram(samples: Sequence[float], bins: int = HISTOGRAM_BINS) -> Histogram:
    s = sorted(samples)
    lo = s[0]
    hi = percentile(s, 99) if len(s) >= OVERFLOW_MIN_SAMPLES else s[-1]
    if hi <= lo:
        return Histogram(edges=(lo, hi), counts=(sum(1 for x in s if x <= hi),), overflow=0)
    width = (hi - lo) / bins
    counts = [0] * bins
    overflow = 0
    for x in s:
        if x > hi:
            overflow += 1
            continue
        counts[min(bins - 1, int((x - lo) / width))] += 1
    edges = tuple(lo + width * i for i in range(bins)) + (hi,)
    return Histogram(edges=edges, counts=tuple(counts), overflow=overflow)
