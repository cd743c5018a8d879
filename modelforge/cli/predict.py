"""``modelforge predict``: batch inference from files or stdin to a file or stdout."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.cluster_predict import ClusterOpt, PartitionRowsOpt, ResumeOpt
from modelforge.cli.common import (
    CustomOpsOpt,
    JobMemoryLimitOpt,
    JobTimeoutOpt,
    JsonOpt,
    ModelArg,
    NoUpgradeOpt,
    OptLevelOpt,
    ProviderOpt,
    ProviderOptionOpt,
    ThreadsOpt,
    global_options,
    parse_key_values,
    run,
    split_csv_option,
)

if TYPE_CHECKING:
    from modelforge.render import Renderer


def _shape(shape: Any) -> str:
    """[N, 4] as people write it; "?" for an unknown dimension, "unknown" for no shape."""
    from modelforge.text import safe

    if shape is None:
        return "[unknown]"
    return "[" + ", ".join("?" if d is None else safe(str(d), 40) for d in shape) + "]"


def _render_explain(out: Renderer, res: Any) -> None:
    from modelforge.text import safe

    m, d = res.model, res.data
    out.line(f"model   {safe(m['path'], 300)} (opset {m['opset']})")
    out.line(f"data    {', '.join(safe(s) for s in d['sources'])} [{d['format']}]")
    for f in res.feeds:
        shape = _shape(f["shape"])
        cols = ", ".join(safe(c, 60) for c in f["columns"][:12])
        more = f" … ({len(f['columns'])} columns)" if len(f["columns"]) > 12 else ""
        out.line(f"input   {safe(f['input'])} {f['dtype']} {shape} <- {cols}{more}")
        out.line(f"        by {f['source']}; cast {f['cast']}")
    keep = d["mapping"]["keep"]
    if keep:
        out.line("keep    " + ", ".join(safe(c) for c in keep))
    unused = d["mapping"]["unused_columns"]
    if unused:
        out.line("unused  " + ", ".join(safe(c) for c in unused[:20]))
    for o in res.outputs:
        out.line(f"output  {safe(o['name'])} {safe(o['type'])} {_shape(o['shape'])}")
    b = res.batch
    fixed = " (fixed by the model)" if b["fixed_batch"] else ""
    out.line(f"batches {b['batch_size']} rows{fixed}; streaming: {b['streaming']}")


class _ProgressLine:
    """rows, rows/s and ETA on stderr (through the Renderer), redrawn at most 5 times a
    second."""

    def __init__(self, out: Renderer) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, rows: int, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        rate = rows / max(now - self.t0, 1e-9)
        eta = ""
        if total and done:
            left = (now - self.t0) * (total - done) / done
            eta = f", ETA {left:.0f} s"
        self.out.progress(f"{rows:,} rows, {rate:,.0f} rows/s{eta}")

    def done(self) -> None:
        if self.last:
            self.out.progress("")


def _parse_maps(items: list[str] | None) -> dict[str, list[str]]:
    from modelforge.errors import UsageError
    from modelforge.text import escape

    out: dict[str, list[str]] = {}
    for item in items or []:
        for key, value in parse_key_values([item], "--map").items():
            if key in out:
                raise UsageError(
                    f"--map names input '{escape(key)}' twice",
                    hint=f"list its columns once: --map {escape(key)}=a,b,c",
                    code="invalid_option",
                )
            out[key] = split_csv_option(value) or []
    return out


def predict_cmd(
    ctx: typer.Context,
    model: ModelArg,
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Input files; '-' or none reads stdin (CSV).")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output file (default: stdout).")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Input format: csv tsv npy npz parquet jsonl.")
    ] = None,
    out_format: Annotated[
        str | None,
        typer.Option("--output-format", help="Output format (default from -o, else csv)."),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help='Inline JSON input, e.g. {"x": [[1.0, 2.0]]}.')
    ] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="INPUT=COL[,COL...] mapping; repeat.")
    ] = None,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Ordered columns for the single 2-D input.")
    ] = None,
    keep: Annotated[
        str | None, typer.Option("--keep", help="Columns copied to the output (never fed).")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the mapping and batch plan; do not run.")
    ] = False,
    cast: Annotated[
        str, typer.Option("--cast", help="Cast policy: safe (lossless), strict or force.")
    ] = "safe",
    allow_nan: Annotated[
        bool, typer.Option("--allow-nan", help="Pass NaN/empty cells to the model.")
    ] = False,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="Text encoding of CSV/TSV input (utf-8).")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV delimiter (default , or tab for TSV).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows per onnxruntime run.")
    ] = 10_000,
    outputs: Annotated[
        str | None, typer.Option("--outputs", help="Comma-separated model outputs to write.")
    ] = None,
    provider: ProviderOpt = None,
    provider_option: ProviderOptionOpt = None,
    fallback: Annotated[
        bool, typer.Option("--fallback", help="Fall back to available providers with a warning.")
    ] = False,
    threads: ThreadsOpt = None,
    opt_level: OptLevelOpt = None,
    no_upgrade: NoUpgradeOpt = False,
    custom_ops: CustomOpsOpt = None,
    memory_limit: JobMemoryLimitOpt = None,
    timeout: JobTimeoutOpt = None,
    cluster: ClusterOpt = None,
    partition_rows: PartitionRowsOpt = None,
    resume: ResumeOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a model on CSV, TSV, NPY, NPZ, Parquet or JSON Lines data.

    Predictions go to -o FILE (written atomically) or stream to stdout. With --json the
    summary envelope goes to stdout, so -o is required. -o OUT_DIR/ (a folder) writes
    Parquet parts and a _SUCCESS manifest, in this process or on Dask with --cluster.

    Example: modelforge predict iris.onnx flowers.csv --keep id -o predictions.csv
    """
    name = "predict --explain" if explain else "predict"
    with run(ctx, name, json_out) as out:
        from modelforge.errors import UsageError

        if json_out and not explain and output in (None, "-"):
            raise UsageError(
                "--json writes the summary to stdout, so predictions need -o FILE",
                hint="add -o predictions.csv, or drop --json",
                code="json_needs_output",
            )
        from modelforge.inference import PredictOptions

        read = PredictOptions(
            fmt=fmt,
            maps=_parse_maps(map_),
            columns=split_csv_option(columns),
            keep=split_csv_option(keep),
            cast=cast,
            allow_nan=allow_nan,
            encoding=encoding,
            delimiter=delimiter,
            batch_size=batch_size,
            outputs=split_csv_option(outputs),
            data_json=data,
        )
        if explain:
            from modelforge.inference import explain as explain_fn

            out.emit(explain_fn(model, inputs, read), _render_explain)
            return
        from modelforge.engine.session import SessionConfig
        from modelforge.inference import predict_to

        cfg = SessionConfig(
            providers=provider or None,
            provider_options=parse_key_values(provider_option, "--provider-option"),
            fallback=fallback,
            threads=threads,
            opt_level=opt_level,
            custom_ops=tuple(custom_ops or ()),
        )
        opts = global_options(ctx)
        bar = _ProgressLine(out) if out.stderr_is_terminal and not opts.quiet else None
        from pathlib import Path

        from modelforge.data.writers import temp_name
        from modelforge.engine.forked import can_fork, forked_limits, run_forked

        limits = forked_limits(memory_limit, timeout)
        from modelforge.cluster import wants_partitioned

        if wants_partitioned(output, cluster=cluster, partition_rows=partition_rows, resume=resume):
            from modelforge.cli.cluster_predict import predict_parts

            guard = (lambda j: run_forked(j, cleanup=[], limits=limits)) if can_fork() else None
            predict_parts(out, opts.quiet, guard, model=model, inputs=list(inputs or []),
                          out_dir=output, options=read, cluster=cluster, resume=resume,
                          partition_rows=partition_rows, session_config=cfg,
                          no_upgrade=no_upgrade)  # fmt: skip
            return

        target = None if output in (None, "-") else output
        tmp = temp_name(target) if target else None

        def job() -> dict[str, Any]:
            return predict_to(
                model, inputs, output, read, out_format=out_format, session_config=cfg,
                no_upgrade=no_upgrade, progress=bar, temp_path=tmp,
            ).to_dict()  # fmt: skip

        if can_fork():
            summary = run_forked(job, cleanup=[Path(tmp)] if tmp else [], limits=limits)
            out.warnings.extend(w for w in summary.get("warnings", []) if w not in out.warnings)
        else:
            summary = job()
        if bar is not None:
            bar.done()
        out.info(
            f"{summary['rows']:,} rows in {summary['batches']} batches, "
            f"{summary['seconds']:.2f} s; providers used: {', '.join(summary['providers_used'])}",
            verbose_only=True,
        )
        out.emit(summary, None)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
