"""Measuring models: cold start, first inference, steady-state latency and throughput.

How a benchmark runs (docs/bench.md has the user-facing version):

1. Preparation (not timed): each model is loaded and its feeds are built per batch size; for
   every (model, provider) target a session is created and run once per batch size, so that
   errors surface before anything is measured and onnxruntime's one-time set-up is paid.
2. Cold start, R interleaved rounds: per target, load the model and create the session
   exactly as predict does (:func:`modelforge.inference.load` and ``open_session``: resolve,
   read, parse and check external data only when the file may reference any, in-memory
   opset upgrade when needed) and run the first inference at the first batch size. The
   last round's sessions are kept for step 3; earlier ones are dropped before the next is
   created.
3. Steady state: ``warmup`` untimed runs per target and batch size, then R interleaved
   rounds; in each round every batch size runs every target in turn (order reversed on
   odd rounds, A B / B A), ``runs / R`` timed runs or ``duration / R`` seconds per slot.
   Each run is timed alone with ``time.perf_counter_ns`` around ``InferenceSession.run``,
   with the garbage collector paused.

Latency percentiles pool all timed runs; per-round values (median latency, throughput)
show the noise: min/median/max over rounds and the spread rule of
:mod:`modelforge.bench.stats`. With ``compare``, ratios are computed per round (both
models measured side by side) and summarised the same way.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.bench.feeds import MAX_FEED_BYTES, ModelInputs, prepare_inputs
from modelforge.bench.stats import (
    SPREAD_LIMIT,
    Histogram,
    LatencyStats,
    RoundStats,
    histogram,
    latency_stats,
    median,
    rounded,
)
from modelforge.errors import UsageError

if TYPE_CHECKING:
    from onnx import ModelProto

    from modelforge.bench.env import Environment
    from modelforge.engine.session import Session, SessionConfig
    from modelforge.inference import LoadedModel
    from modelforge.model.schema import ModelSchema

DEFAULT_DURATION_S = 1.0  # steady state per target and batch size, over all rounds
DEFAULT_WARMUP = 5
DEFAULT_ROUNDS = 5
MAX_SAMPLES_PER_SLOT = 1_000_000

Progress = Callable[[str], None]


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
        if self.runs is not None and self.runs < 1:
            raise bad("--runs must be at least 1")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise bad("--duration must be a positive number of seconds")
        if self.warmup < 0:
            raise bad("--warmup must be 0 or more")
        if self.rounds < 1:
            raise bad("--rounds must be at least 1")
        if self.batch_sizes is not None and (
            not self.batch_sizes or any(b < 1 for b in self.batch_sizes)
        ):
            raise bad("--batch-sizes must list positive integers", "e.g. --batch-sizes 1,8,64")
        if self.threads is not None and self.threads < 0:
            raise bad("--threads must be 0 (onnxruntime default) or more")
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


# measurement ------------------------------------------------------------------------------


@dataclass
class _Model:
    label: str
    ref: str
    loaded: LoadedModel
    proto: ModelProto
    schema: ModelSchema
    inputs: ModelInputs


@dataclass
class _Target:
    model: _Model
    provider: str
    cfg: SessionConfig
    no_upgrade: bool = False
    session: Session | None = None
    upgraded: int | None = None
    providers_used: list[str] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)
    session_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    samples: dict[int, list[float]] = field(default_factory=dict)  # batch size -> all runs
    round_medians: dict[int, list[float]] = field(default_factory=dict)
    round_throughput: dict[int, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model.label} on {self.provider}"


@contextmanager
def _quiet_repeats() -> Iterator[None]:
    """Drop library warnings while repeating cold starts (they were shown once already)."""
    logger = logging.getLogger("modelforge")

    def drop(record: logging.LogRecord) -> bool:
        return False

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run_once(target: _Target, feeds: dict[str, Any], what: str) -> None:
    from modelforge.engine.session import translate_error

    assert target.session is not None
    try:
        target.session.inner.run(None, feeds)
    except Exception as exc:  # onnxruntime raises pybind exception types
        raise translate_error(exc, f"running {target.name} ({what})") from None


def _cold_start(target: _Target) -> None:
    """Load + create + first inference; the new session replaces the target's."""
    from modelforge.inference import load, open_session

    target.session = None  # free the previous session before building the next
    first = target.model.inputs.sizes[0]
    feeds = target.model.inputs.feeds[first]
    t0 = time.perf_counter_ns()
    lm = load(target.model.ref)
    t1 = time.perf_counter_ns()
    session, upgraded = open_session(lm, target.cfg, target.no_upgrade)
    t2 = time.perf_counter_ns()
    target.session = session
    _run_once(target, feeds, f"first inference, batch {first}")
    t3 = time.perf_counter_ns()
    target.upgraded = upgraded
    target.providers_used = session.providers_used
    target.load_ms.append((t1 - t0) / 1e6)
    target.session_ms.append((t2 - t1) / 1e6)
    target.first_ms.append((t3 - t2) / 1e6)


def _slot(target: _Target, size: int, runs: int | None, seconds: float | None) -> None:
    """One round's timed runs of one target at one batch size."""
    from modelforge.engine.session import translate_error

    assert target.session is not None
    feeds = target.model.inputs.feeds[size]
    run = target.session.inner.run
    clock = time.perf_counter_ns
    got: list[float] = []
    limit = runs if runs is not None else MAX_SAMPLES_PER_SLOT
    deadline = clock() + int((seconds or 0) * 1e9)
    try:
        with _gc_paused():
            for _ in range(limit):
                t0 = clock()
                run(None, feeds)
                t1 = clock()
                got.append((t1 - t0) / 1e6)
                if runs is None and t1 >= deadline:
                    break
    except Exception as exc:  # onnxruntime raises pybind exception types
        raise translate_error(exc, f"running {target.name} at batch {size}") from None
    target.samples.setdefault(size, []).extend(got)
    target.round_medians.setdefault(size, []).append(median(got))
    total_s = sum(got) / 1e3
    rows = size * len(got)
    target.round_throughput.setdefault(size, []).append(rows / total_s if total_s else 0.0)


def _split_runs(total: int, rounds: int) -> list[int]:
    base, extra = divmod(total, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def _order(targets: list[_Target], rnd: int) -> list[_Target]:
    return targets if rnd % 2 == 0 else list(reversed(targets))


def _load_model(label: str, ref: str, opts: BenchOptions) -> _Model:
    from modelforge.inference import load

    lm = load(ref)
    proto = lm.parse()  # the schema (for synthesis) and the opset (for the report)
    schema = lm.schema
    assert schema is not None  # set by parse()
    display = f"{label} ({lm.location.display})"
    inputs = prepare_inputs(
        lm,
        schema,
        label=display,
        requested=opts.batch_sizes,
        dims=opts.dims,
        seed=opts.seed,
        data=opts.data,
        maps=opts.maps,
        columns=opts.columns,
        max_feed_bytes=opts.max_feed_bytes,
    )
    return _Model(label, ref, lm, proto, schema, inputs)


def run_bench(
    model: str,
    options: BenchOptions | None = None,
    *,
    progress: Progress | None = None,
) -> BenchReport:
    """Benchmark ``model`` (and ``options.compare``) on each requested provider."""
    from modelforge.bench.env import environment
    from modelforge.engine.providers import (
        available_providers,
        canonical,
        plan_providers,
        short_name,
    )
    from modelforge.errors import ProviderUnavailableError
    from modelforge.inference import open_session

    opts = options or BenchOptions()
    opts.check()
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    providers = list(dict.fromkeys(canonical(p) for p in opts.providers))
    for provider in providers:  # unavailable providers fail before anything runs
        try:
            plan_providers([provider])
        except ProviderUnavailableError as exc:
            raise ProviderUnavailableError(
                exc.message,
                hint="this onnxruntime build has: "
                + ", ".join(short_name(a) for a in available_providers())
                + "; install the matching onnxruntime package (e.g. onnxruntime-gpu)",
            ) from None
    env = environment()
    models = [_load_model("model", model, opts)]
    if opts.compare is not None:
        models.append(_load_model("compare", opts.compare, opts))
    targets = []
    for provider in providers:
        for m in models:
            targets.append(_Target(m, provider, opts.session_config(provider), opts.no_upgrade))

    # 1. preparation: every target runs every batch size once (errors surface here)
    for t in targets:
        say(f"preparing {t.name}")
        t.session, t.upgraded = open_session(t.model.loaded, t.cfg, opts.no_upgrade)
        for size in t.model.inputs.sizes:
            _run_once(t, t.model.inputs.feeds[size], f"batch {size}")
        t.session = None

    rounds = opts.effective_rounds
    # 2. cold starts, interleaved
    with _quiet_repeats():
        for rnd in range(rounds):
            for t in _order(targets, rnd):
                say(f"cold start {rnd + 1}/{rounds}: {t.name}")
                _cold_start(t)

    # 3. steady state: warm-up, then interleaved rounds
    for t in targets:
        say(f"warm-up: {t.name}")
        for size in t.model.inputs.sizes:
            for _ in range(opts.warmup):
                _run_once(t, t.model.inputs.feeds[size], f"warm-up, batch {size}")
    sizes = list(dict.fromkeys(s for m in models for s in m.inputs.sizes))
    per_round_runs = _split_runs(opts.runs, rounds) if opts.runs is not None else None
    seconds = None if opts.runs is not None else (opts.duration_s or DEFAULT_DURATION_S) / rounds
    for rnd in range(rounds):
        for size in sizes:
            for t in _order(targets, rnd):
                if size in t.model.inputs.feeds:
                    say(f"round {rnd + 1}/{rounds}: {t.name}, batch {size}")
                    runs = per_round_runs[rnd] if per_round_runs is not None else None
                    _slot(t, size, runs, seconds)
    for t in targets:
        t.session = None

    results = [_result(t) for t in targets]
    ratios = _ratios(targets) if opts.compare is not None else []
    return BenchReport(
        model=_model_info(models[0]),
        compare=_model_info(models[1]) if len(models) > 1 else None,
        settings=opts.to_dict(),
        environment=env,
        results=results,
        ratios=ratios,
        untrustworthy=_untrustworthy(results, ratios),
        seconds=time.perf_counter() - started,
    )


# summaries --------------------------------------------------------------------------------


def _model_info(m: _Model) -> dict[str, Any]:
    from modelforge.engine.upgrade import default_opset

    return {
        **m.loaded.location.to_dict(),
        "display": m.loaded.location.display,
        "opset": default_opset(m.proto),
        "inputs": [s.to_dict() for s in m.schema.inputs],
        **m.inputs.describe(),
    }


def _result(t: _Target) -> TargetResult:
    from modelforge.engine.providers import short_name

    cold = [a + b for a, b in zip(t.load_ms, t.session_ms, strict=True)]
    batches = []
    for size in t.model.inputs.sizes:
        samples = t.samples[size]
        batches.append(
            BatchResult(
                batch_size=size,
                rows_per_run=size,
                input_shapes=t.model.inputs.shapes(size),
                latency_ms=latency_stats(samples),
                median_latency_rounds_ms=RoundStats(tuple(t.round_medians[size])),
                throughput_rounds=RoundStats(tuple(t.round_throughput[size])),
                histogram=histogram(samples),
            )
        )
    return TargetResult(
        model=t.model.label,
        ref=t.model.ref,
        path=str(t.model.loaded.location.path),
        provider=short_name(t.provider),
        providers_used=[short_name(p) for p in t.providers_used],
        session=t.cfg.to_dict(),
        upgraded_to_opset=t.upgraded,
        inputs=t.model.inputs.describe(),
        load_ms=RoundStats(tuple(t.load_ms)),
        session_ms=RoundStats(tuple(t.session_ms)),
        cold_start_ms=RoundStats(tuple(cold)),
        first_inference_ms=RoundStats(tuple(t.first_ms)),
        batches=batches,
    )


def _per_round_ratio(base: list[float], other: list[float]) -> RoundStats:
    return RoundStats(tuple(o / b if b else float("inf") for b, o in zip(base, other, strict=True)))


def _ratios(targets: list[_Target]) -> list[Ratio]:
    from modelforge.engine.providers import short_name

    out: list[Ratio] = []
    by_provider: dict[str, dict[str, _Target]] = {}
    for t in targets:
        by_provider.setdefault(t.provider, {})[t.model.label] = t
    for pair in by_provider.values():
        a, b = pair["model"], pair["compare"]
        prov = short_name(a.provider)
        cold_a = [x + y for x, y in zip(a.load_ms, a.session_ms, strict=True)]
        cold_b = [x + y for x, y in zip(b.load_ms, b.session_ms, strict=True)]
        out.append(
            Ratio(prov, "cold_start_ms", None, RoundStats(tuple(cold_a)).median,
                  RoundStats(tuple(cold_b)).median, _per_round_ratio(cold_a, cold_b))
        )  # fmt: skip
        out.append(
            Ratio(prov, "first_inference_ms", None, RoundStats(tuple(a.first_ms)).median,
                  RoundStats(tuple(b.first_ms)).median, _per_round_ratio(a.first_ms, b.first_ms))
        )  # fmt: skip
        for size in a.model.inputs.sizes:
            if size not in b.model.inputs.feeds:
                continue
            la, lb = latency_stats(a.samples[size]), latency_stats(b.samples[size])
            out.append(
                Ratio(prov, "latency_p50_ms", size, la.p50, lb.p50,
                      _per_round_ratio(a.round_medians[size], b.round_medians[size]))
            )  # fmt: skip
            out.append(Ratio(prov, "latency_p90_ms", size, la.p90, lb.p90, None))
            out.append(Ratio(prov, "latency_p99_ms", size, la.p99, lb.p99, None))
            ta, tb = a.round_throughput[size], b.round_throughput[size]
            out.append(
                Ratio(prov, "throughput_rows_per_s", size, RoundStats(tuple(ta)).median,
                      RoundStats(tuple(tb)).median, _per_round_ratio(ta, tb))
            )  # fmt: skip
    return out


def _untrustworthy(results: list[TargetResult], ratios: list[Ratio]) -> list[str]:
    bad: list[str] = []
    for r in results:
        who = f"{r.model} on {r.provider}"
        if r.cold_start_ms.trustworthy is False:
            bad.append(f"{who}: cold start")
        if r.first_inference_ms.trustworthy is False:
            bad.append(f"{who}: first inference")
        for b in r.batches:
            if b.median_latency_rounds_ms.trustworthy is False:
                bad.append(f"{who}: latency at batch {b.batch_size}")
            if b.throughput_rounds.trustworthy is False:
                bad.append(f"{who}: throughput at batch {b.batch_size}")
    for q in ratios:
        if q.per_round is not None and q.per_round.trustworthy is False:
            at = f" at batch {q.batch_size}" if q.batch_size is not None else ""
            bad.append(f"ratio {q.metric}{at} on {q.provider}")
    return bad
