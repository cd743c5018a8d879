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

import dataclasses
import gc
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.bench.feeds import ModelInputs, prepare_inputs
from modelforge.bench.options import DEFAULT_DURATION_S, BenchOptions
from modelforge.bench.report import BatchResult, BenchReport, Ratio, TargetResult
from modelforge.bench.stats import (
    RoundStats,
    histogram,
    latency_stats,
    median,
)

if TYPE_CHECKING:
    from onnx import ModelProto

    from modelforge.engine.isolate import Limits
    from modelforge.engine.session import Session, SessionConfig
    from modelforge.inference import LoadedModel
    from modelforge.model.schema import ModelSchema

MAX_SAMPLES_PER_SLOT = 1_000_000

# progress(message, steps done, total steps): one step per prepared target, cold-start round,
# warm-up and timed slot
Progress = Callable[[str, int, int], None]


# measurement ------------------------------------------------------------------------------


@dataclass
class _Model:
    label: str
    ref: str
    loaded: LoadedModel
    proto: ModelProto
    schema: ModelSchema
    inputs: ModelInputs
    dims: dict[str, int] = field(default_factory=dict)  # --dim values


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


def _explained(target: _Target, feeds: dict[str, Any], err: Any) -> Any:
    """A failed run on synthesized inputs names the sizes used for symbolic dims (a traced
    export may only run at its example's sizes) and hints --dim."""
    from modelforge.bench.feeds import batch_dim_names
    from modelforge.model.synth import with_synthesized_sizes

    if target.model.inputs.data_rows is not None:
        return err  # real data: the sizes are the user's
    given = {**target.model.dims, **dict.fromkeys(batch_dim_names(target.model.schema), 0)}
    return with_synthesized_sizes(err, target.model.schema, feeds, given)


def _run_once(target: _Target, feeds: dict[str, Any], what: str) -> None:
    from modelforge.engine.session import translate_error

    assert target.session is not None
    try:
        target.session.inner.run(None, feeds)
    except Exception as exc:  # onnxruntime raises pybind exception types
        failure = translate_error(exc, f"running {target.name} ({what})")
        raise _explained(target, feeds, failure) from None


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
        failure = translate_error(exc, f"running {target.name} at batch {size}")
        raise _explained(target, feeds, failure) from None
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
    return _Model(label, ref, lm, proto, schema, inputs, dict(opts.dims or {}))


def run_bench(
    model: str,
    options: BenchOptions | None = None,
    *,
    progress: Progress | None = None,
    isolate: bool = False,
    limits: Limits | None = None,
) -> BenchReport:
    """Benchmark ``model`` (and ``options.compare``) on each requested provider.

    ``isolate=True`` runs the whole benchmark in a guarded child
    (:func:`modelforge.engine.isolate.run_isolated`, ``limits`` default
    ``Limits.for_jobs()``): a model that crashes onnxruntime is a ResourceLimitError
    (exit 8) instead of taking the caller down; ``progress`` is still called here.
    """
    from modelforge.errors import check_field_types, check_type

    check_type(model, (str, os.PathLike), "model", "a path or a store reference")
    if options is not None:
        check_type(options, BenchOptions, "options", "a BenchOptions (or None)")
        check_field_types(options)
        for size in options.batch_sizes or ():
            check_type(size, int, "batch_sizes", "a tuple of ints, e.g. (1, 64)")
    if isolate:
        from modelforge.engine.isolate import Limits, run_isolated

        raw = run_isolated(
            _isolated_bench, model, options, what="bench", limits=limits or Limits.for_jobs(),
            on_progress=None if progress is None else (lambda m: progress(str(m[0]), m[1], m[2])),
        )  # fmt: skip
        return raw if isinstance(raw, BenchReport) else BenchReport.from_raw(raw)
    return _run_bench(model, options, progress)


def _send_progress(message: str, done: int, total: int) -> None:
    from modelforge.engine.isolate import progress

    progress([message, done, total])


def _isolated_bench(model: str, options: BenchOptions | None) -> Any:
    """In the guarded child: the exact report, as JSON-able dicts (see BenchReport.from_raw).
    When the guard runs in process (no child possible) the report itself is returned."""
    from modelforge.engine.isolate import in_child

    report = _run_bench(model, options, _send_progress)
    return dataclasses.asdict(report) if in_child() else report


def _run_bench(model: str, options: BenchOptions | None, progress: Progress | None) -> BenchReport:
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
    step = [0, 0]  # done, total

    def say(message: str) -> None:
        if progress is not None:
            progress(message, step[0], step[1])
        step[0] += 1

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

    rounds = opts.effective_rounds
    sizes = list(dict.fromkeys(s for m in models for s in m.inputs.sizes))
    slots = sum(1 for size in sizes for t in targets if size in t.model.inputs.feeds)
    step[1] = len(targets) * (2 + rounds) + rounds * slots

    # 1. preparation: every target runs every batch size once (errors surface here)
    for t in targets:
        say(f"preparing {t.name}")
        t.session, t.upgraded = open_session(t.model.loaded, t.cfg, opts.no_upgrade)
        for size in t.model.inputs.sizes:
            _run_once(t, t.model.inputs.feeds[size], f"batch {size}")
        t.session = None

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
