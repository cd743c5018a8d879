"""What a benchmark measures and how: :class:`BenchOptions`, checked before anything loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.bench.feeds import MAX_FEED_BYTES
from modelforge.bench.stats import SPREAD_LIMIT
from modelforge.errors import UsageError

if TYPE_CHECKING:
    from modelforge.engine.session import SessionConfig

DEFAULT_DURATION_S = 1.0  # steady state per target and batch size, over all rounds
DEFAULT_WARMUP = 5
DEFAULT_ROUNDS = 5
# upper bounds: far above any useful benchmark, low enough that a typo is caught at once
MAX_RUNS = 10_000_000
MAX_WARMUP = 1_000_000
MAX_ROUNDS = 1_000
MAX_DURATION_S = 24 * 3600.0


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and how; every field is reported with the results."""

    providers: tuple[str, ...] = ("cpu",)
    provider_options: dict[str, str] = field(default_factory=dict)  # first provider only
    threads: int | None = None
    opt_level: str | None = None
    runs: int | None = None  # timed runs per target and batch size, over all rounds
    duration_s: float | None = None  # or seconds per target and batch size (default 1 s)
    warmup: int = DEFAULT_WARMUP
    rounds: int = DEFAULT_ROUNDS
    batch_sizes: tuple[int, ...] | None = None  # None: 1, 8, 64, 512
    dims: dict[str, int] = field(default_factory=dict)
    data: str | None = None  # data file (any predict format) or inline JSON
    maps: dict[str, list[str]] = field(default_factory=dict)  # --map INPUT=COL,... for data
    columns: list[str] | None = None  # --columns for data (single 2-D input)
    compare: str | None = None  # a second model, measured interleaved with the first
    seed: int = 0
    custom_ops: tuple[str, ...] = ()
    no_upgrade: bool = False
    max_feed_bytes: int = MAX_FEED_BYTES

    def check(self) -> None:
        """Reject impossible settings with one clear line (before anything is loaded)."""
        from modelforge.engine.session import OPT_LEVELS

        def bad(msg: str, hint: str | None = None) -> UsageError:
            return UsageError(msg, hint=hint, code="invalid_option")

        if self.runs is not None and self.duration_s is not None:
            raise bad("--runs and --duration cannot be combined", "pass one of them")
        if self.runs is not None and not 1 <= self.runs <= MAX_RUNS:
            raise bad(f"--runs must be 1 to {MAX_RUNS:,}, got {self.runs}")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and 0 < self.duration_s <= MAX_DURATION_S
        ):
            raise bad(
                f"--duration must be a positive number of seconds, at most {MAX_DURATION_S:g}",
                "e.g. --duration 2",
            )
        if not 0 <= self.warmup <= MAX_WARMUP:
            raise bad(f"--warmup must be 0 to {MAX_WARMUP:,}, got {self.warmup}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise bad(f"--rounds must be 1 to {MAX_ROUNDS:,}, got {self.rounds}")
        if not 0 <= self.seed < 2**63:
            raise bad(f"--seed must be 0 to {2**63 - 1}, got {self.seed}", "e.g. --seed 0")
        if self.batch_sizes is not None and (
            not self.batch_sizes or any(b < 1 for b in self.batch_sizes)
        ):
            raise bad("--batch-sizes must list positive integers", "e.g. --batch-sizes 1,8,64")
        if self.threads is not None:
            from modelforge.engine.session import check_threads

            check_threads(self.threads)
        if self.opt_level is not None and self.opt_level not in OPT_LEVELS:
            raise bad(
                f"unknown optimisation level '{self.opt_level}'",
                "use one of: " + ", ".join(OPT_LEVELS),
            )
        if not self.providers:
            raise bad("no execution provider given", "e.g. --provider cpu")

    @property
    def effective_rounds(self) -> int:
        return min(self.rounds, self.runs) if self.runs is not None else self.rounds

    def session_config(self, provider: str) -> SessionConfig:
        from modelforge.engine.providers import canonical
        from modelforge.engine.session import SessionConfig

        first = canonical(provider) == canonical(self.providers[0])
        return SessionConfig(
            providers=[provider],
            provider_options=dict(self.provider_options) if first else {},
            threads=self.threads,
            opt_level=self.opt_level,
            custom_ops=self.custom_ops,
        )

    def to_dict(self) -> dict[str, Any]:
        mode = "runs" if self.runs is not None else "duration"
        return {
            "mode": mode,
            "runs": self.runs,
            "duration_s": None if self.runs is not None else self.duration_s or DEFAULT_DURATION_S,
            "warmup": self.warmup,
            "rounds_requested": self.rounds,
            "rounds": self.effective_rounds,
            "batch_sizes": list(self.batch_sizes) if self.batch_sizes else None,
            "dims": dict(self.dims),
            "data": self.data,
            "maps": dict(self.maps),
            "columns": self.columns,
            "seed": self.seed,
            "providers": list(self.providers),
            "provider_options": dict(self.provider_options),
            "threads": self.threads,
            "opt_level": self.opt_level or "all",
            "custom_ops": list(self.custom_ops),
            "spread_limit": SPREAD_LIMIT,
            "timer": "time.perf_counter_ns around each InferenceSession.run, GC paused",
        }
