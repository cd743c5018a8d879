"""``modelforge bench``: cold start, latency percentiles and throughput per provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import DimOpt, JsonOpt, ModelArg, NoUpgradeOpt, run, split_csv_option
from modelforge.cli.options import (
    JobLimitsArgs,
    MappingArgs,
    SessionArgs,
    option_groups,
)
from modelforge.text import safe

if TYPE_CHECKING:
    from modelforge.bench import BenchReport
    from modelforge.render import Renderer

_BLOCKS = " ▏▎▍▌▋▊▉█"
_BAR_WIDTH = 30


def fmt_ms(ms: float) -> str:
    """A duration given in milliseconds, in the unit that keeps 3-4 significant digits."""
    if ms != ms:  # NaN
        return "-"
    if ms < 1:
        return f"{ms * 1000:.3g} µs"
    if ms < 1000:
        return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"
    return f"{ms / 1000:.3g} s"


def fmt_rate(rows_per_s: float) -> str:
    if rows_per_s >= 1e6:
        return f"{rows_per_s / 1e6:.3g}M"
    if rows_per_s >= 1e4:
        return f"{rows_per_s / 1e3:.3g}k"
    return f"{rows_per_s:.3g}"


def _spread(rs: Any) -> str:
    if rs.spread is None:
        return "-"
    mark = "" if rs.trustworthy is not False else " !"
    return f"{rs.spread * 100:.0f}%{mark}"


def bar(count: int, most: int, width: int = _BAR_WIDTH) -> str:
    """A horizontal bar of ``count / most`` of ``width`` cells, in eighths of a cell."""
    if most <= 0 or count <= 0:
        return ""
    eighths = max(1, round(count / most * width * 8))
    full, part = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[part] if part else "")


def histogram_lines(hist: dict[str, Any]) -> list[str]:
    edges, counts, overflow = hist["edges_ms"], hist["counts"], hist["overflow"]
    most = max([*counts, overflow, 1])
    labels = [f"{fmt_ms(edges[i])} – {fmt_ms(edges[i + 1])}" for i in range(len(counts))]
    if overflow:
        labels.append(f"> {fmt_ms(edges[-1])}")
    width = max(len(x) for x in labels)
    lines = []
    values = [*counts, overflow] if overflow else list(counts)
    for label, n in zip(labels, values, strict=True):
        lines.append(f"  {label:>{width}} │{bar(n, most):<{_BAR_WIDTH}} {n}")
    return lines


def _render_header(out: Renderer, report: BenchReport) -> None:
    from modelforge.text import safe

    s, env = report.settings, report.environment
    out.line(f"model    {safe(report.model['display'], 300)}")
    if report.compare is not None:
        out.line(f"compare  {safe(report.compare['display'], 300)}")
    load = f", load {env.load_average[0]}" if env.load_average else ""
    out.line(
        f"machine  {safe(env.cpu_model, 80)}, {env.usable_cpus} usable CPUs{load}; "
        f"onnxruntime {env.onnxruntime}, python {env.python}"
    )
    threads = "onnxruntime default" if s["threads"] is None else s["threads"]
    options = ", ".join(f"{k}={v}" for k, v in s["provider_options"].items()) or "none"
    steady = f"{s['runs']} runs" if s["mode"] == "runs" else f"{s['duration_s']:g} s"
    out.line(
        f"settings threads {threads}, opt level {s['opt_level']}, provider options {options}; "
        f"{s['rounds']} rounds, warm-up {s['warmup']}, {steady} per batch size"
    )


def _render_cold(out: Renderer, report: BenchReport) -> None:
    from modelforge.render import table

    compare = report.compare is not None

    first = ["model"] if compare else []
    cold = table(*first, "provider", "used", "load", "session", "cold start", "first run",
                 "spread", title="cold start (median of rounds)")  # fmt: skip
    for r in report.results:
        cells = [r.model] if compare else []
        cold.add_row(
            *cells,
            r.provider,
            ",".join(r.providers_used),
            fmt_ms(r.load_ms.median),
            fmt_ms(r.session_ms.median),
            f"{fmt_ms(r.cold_start_ms.median)} [{fmt_ms(r.cold_start_ms.min)}–"
            f"{fmt_ms(r.cold_start_ms.max)}]",
            fmt_ms(r.first_inference_ms.median),
            _spread(r.cold_start_ms),
        )
    out.print(cold)


def _render_steady(out: Renderer, report: BenchReport) -> None:
    from modelforge.render import table

    compare = report.compare is not None
    steady_t = table(*(["model"] if compare else []), "provider", "batch", "p50", "p90", "p99",
                     "max", "rows/s [min–max]", "runs", "spread",
                     title="steady state (latency per run)")  # fmt: skip
    for r in report.results:
        for b in r.batches:
            cells = [r.model] if compare else []
            tp = b.throughput_rounds
            lat = b.latency_ms
            steady_t.add_row(
                *cells,
                r.provider,
                str(b.batch_size),
                fmt_ms(lat.p50),
                fmt_ms(lat.p90),
                fmt_ms(lat.p99),
                fmt_ms(lat.max),
                f"{fmt_rate(tp.median)} [{fmt_rate(tp.min)}–{fmt_rate(tp.max)}]",
                str(lat.count),
                _spread(b.median_latency_rounds_ms),
            )
    out.print(steady_t)


def _render_ratios(out: Renderer, report: BenchReport) -> None:
    from modelforge.render import table

    if report.ratios:
        rt = table("provider", "metric", "batch", "model", "compare", "compare/model", "[min–max]",
                   "spread", title="compare / model, measured side by side")  # fmt: skip
        for q in report.ratios:
            is_rate = q.metric.startswith("throughput")
            show = fmt_rate if is_rate else fmt_ms
            pr = q.per_round
            rng = "-" if pr is None else f"[{pr.min:.3f}–{pr.max:.3f}]"
            rt.add_row(q.provider, q.metric, "-" if q.batch_size is None else str(q.batch_size),
                       show(q.model), show(q.compare), f"{q.ratio:.3f}", rng,
                       "-" if pr is None else _spread(pr))  # fmt: skip
        out.print(rt)


def render_report(out: Renderer, report: BenchReport) -> None:
    """The human report: settings, cold start, steady state, histograms, ratios, trust."""
    _render_header(out, report)
    _render_cold(out, report)
    _render_steady(out, report)
    compare = report.compare is not None
    for r in report.results:
        b = r.batches[0]
        who = f"{r.model} on {r.provider}" if compare else r.provider
        out.line(f"latency distribution, {who}, batch {b.batch_size} ({b.latency_ms.count} runs)")
        for line in histogram_lines(b.histogram.to_dict()):
            out.line(line)
        out.line()
    _render_ratios(out, report)
    s = report.settings
    if report.untrustworthy:
        out.line(
            f"spread too wide to trust (marked !: per-round values differ by more than "
            f"{s['spread_limit'] * 100:.0f}% of their median; rerun on a quieter machine, or "
            f"with more --rounds or a longer --duration):"
        )
        for item in report.untrustworthy:
            out.line(f"  - {item}")
    out.line(f"done in {report.seconds:.1f} s")


def _parse_batch_sizes(value: str | None) -> tuple[int, ...] | None:
    from modelforge.errors import UsageError
    from modelforge.text import safe

    parts = split_csv_option(value)
    if parts is None:
        return None
    sizes: list[int] = []
    for part in parts:
        try:
            size = int(part)
        except ValueError:
            size = 0
        if size < 1:
            raise UsageError(
                f"--batch-sizes '{safe(value)}' must list positive integers",
                hint="e.g. --batch-sizes 1,8,64",
                code="invalid_option",
            )
        sizes.append(size)
    if not sizes:
        raise UsageError("--batch-sizes is empty", hint="e.g. --batch-sizes 1,8,64",
                         code="invalid_option")  # fmt: skip
    return tuple(dict.fromkeys(sizes))


@dataclass(frozen=True)
class BenchSessionArgs(SessionArgs):
    provider: Annotated[
        list[str] | None,
        typer.Option(
            "--provider",
            metavar="P",
            help="Execution provider to measure (cpu, cuda, ...); "
            "repeat to measure several side by side.",
        ),
    ] = None


@dataclass(frozen=True)
class MeasureArgs:
    """How much to measure: runs or duration, warm-up, rounds, batch sizes, seed."""

    runs: Annotated[
        int | None, typer.Option("--runs", help="Timed runs per batch size, over all rounds.")
    ] = None
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds per batch size, over all rounds (default 1)."),
    ] = None
    warmup: Annotated[
        int, typer.Option("--warmup", help="Untimed runs per batch size before timing.")
    ] = 5
    rounds: Annotated[
        int, typer.Option("--rounds", help="Interleaved rounds (noise shows as spread).")
    ] = 5
    batch_sizes: Annotated[
        str | None,
        typer.Option("--batch-sizes", help="Batch sizes for symbolic batch dims (1,8,64,512)."),
    ] = None
    seed: Annotated[int, typer.Option("--seed", help="Seed for synthesized inputs.")] = 0

    def build(self) -> dict[str, Any]:
        """Keyword arguments for BenchOptions (which checks them)."""
        return {
            "runs": self.runs, "duration_s": self.duration, "warmup": self.warmup,
            "rounds": self.rounds, "batch_sizes": _parse_batch_sizes(self.batch_sizes),
            "seed": self.seed,
        }  # fmt: skip


@option_groups(
    measure=MeasureArgs, session=BenchSessionArgs, mapping=MappingArgs, limits=JobLimitsArgs
)
def bench_cmd(
    ctx: typer.Context,
    model: ModelArg,
    measure: MeasureArgs,
    session: BenchSessionArgs,
    mapping: MappingArgs,
    limits: JobLimitsArgs,
    dim: DimOpt = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Real inputs: a data file (as for predict) or inline JSON."),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="Second model, measured interleaved; reports ratios."),
    ] = None,
    no_upgrade: NoUpgradeOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure cold start, latency and throughput per provider.

    Inputs are synthesized from the model's schema unless --data is given. Rounds are
    interleaved (with --compare, both models side by side) so that noise shows as spread.

    Example: modelforge bench model.onnx --compare model-int8.onnx --batch-sizes 1,64
    """
    with run(ctx, "bench", json_out) as out:
        from modelforge.bench import BenchOptions, run_bench
        from modelforge.model.synth import parse_dims

        cfg = session.build()
        opts = BenchOptions(
            providers=tuple(cfg.providers or ("cpu",)), provider_options=cfg.provider_options,
            threads=cfg.threads, opt_level=cfg.opt_level, custom_ops=cfg.custom_ops,
            **measure.build(), dims=parse_dims(dim), data=data, **mapping.build(),
            compare=compare, no_upgrade=no_upgrade,
        )  # fmt: skip
        opts.check()
        lim = limits.build()
        with out.progress("bench", unit="steps") as bar:

            def step(message: str, done: int, total: int) -> None:
                bar.update(completed=done, total=total, description=safe(message, 40))

            report = run_bench(model, opts, progress=step, isolate=True, limits=lim)
        out.emit(report, render_report)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
