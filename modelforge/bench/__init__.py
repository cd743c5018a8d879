"""Benchmarking models: ``run_bench(model, BenchOptions(...)) -> BenchReport``.

Importing this package is cheap: onnxruntime, onnx and numpy are imported when a benchmark
runs. See :mod:`modelforge.bench.core` for the method and docs/bench.md for the user guide.
"""

from __future__ import annotations

from modelforge.bench.core import (
    BatchResult,
    BenchOptions,
    BenchReport,
    Ratio,
    TargetResult,
    run_bench,
)
from modelforge.bench.stats import SPREAD_LIMIT, LatencyStats, RoundStats

__all__ = [
    "SPREAD_LIMIT",
    "BatchResult",
    "BenchOptions",
    "BenchReport",
    "LatencyStats",
    "Ratio",
    "RoundStats",
    "TargetResult",
    "run_bench",
]
