"""``modelforge predict``: batch inference from files or stdin to a file or stdout."""

from __future__ import annotations

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
    parse_key_values,
    run,
    split_csv_option,
)
from modelforge.cli.options import parse_maps

if TYPE_CHECKING:
    from modelforge.render import Renderer


def _render_explain(out: Renderer, res: Any) -> None:
    from modelforge.model.schema import format_shape
    from modelforge.text import safe

    m, d = res.model, res.data
    out.line(f"model   {safe(m['path'], 300)} (opset {m['opset']})")
    out.line(f"data    {', '.join(safe(s) for s in d['sources'])} [{d['format']}]")
    for f in res.feeds:
        shape = format_shape(f["shape"])
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
        out.line(f"output  {safe(o['name'])} {safe(o['type'])} {format_shape(o['shape'])}")
    b = res.batch
    if b["mode"] == "whole":
        out.line(f"mode    whole: one run on the whole tensors ({b['reason']})")
        return
    fixed = " (fixed by the model)" if b["fixed_batch"] else ""
    out.line(f"mode    rows: batches of {b['batch_size']} rows{fixed} ({b['reason']})")
    out.line(f"batches {b['batch_size']} rows{fixed}; streaming: {b['streaming']}")


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
        str | None,
        typer.Option("--format", help="Input format: csv tsv npy npz parquet jsonl json."),
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
    whole: Annotated[
        bool,
        typer.Option("--whole", help="Run once on the whole arrays instead of batches of rows."),
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
    """Run a model on CSV, TSV, NPY, NPZ, Parquet, JSON Lines or JSON data.

    Predictions go to -o FILE (written atomically) or stream to stdout. With --json the
    summary envelope goes to stdout, so -o is required. Rows are fed in batches whenever
    the inputs share a row dimension; otherwise (tensor models) the model runs once on the
    whole arrays (--explain says which, --whole forces it). -o OUT_DIR/ (a folder) writes
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
        if not explain and output in (None, "-"):
            from modelforge.render import refuse_binary_to_terminal

            refuse_binary_to_terminal(out_format)
        from modelforge.data.options import PredictOptions

        read = PredictOptions(
            fmt=fmt,
            maps=parse_maps(map_),
            columns=split_csv_option(columns),
            keep=split_csv_option(keep),
            cast=cast,  # type: ignore[arg-type]  # PredictOptions validates it
            allow_nan=allow_nan,
            encoding=encoding,
            delimiter=delimiter,
            batch_size=batch_size,
            outputs=split_csv_option(outputs),
            data_json=data,
            whole=whole,
        )
        if explain:
            from modelforge.inference import explain as explain_fn

            out.emit(explain_fn(model, inputs, read), _render_explain)
            return
        from modelforge.engine.isolate import Limits
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
        limits = Limits.for_jobs(memory_limit, timeout)
        from modelforge.cluster import wants_partitioned

        if wants_partitioned(output, cluster=cluster, partition_rows=partition_rows, resume=resume):
            from modelforge.cli.cluster_predict import predict_parts

            predict_parts(out, limits, model=model,
                          inputs=list(inputs or []), out_dir=output, options=read,
                          cluster=cluster, resume=resume, partition_rows=partition_rows,
                          session_config=cfg, no_upgrade=no_upgrade)  # fmt: skip
            return
        with out.progress("predicting", unit="rows") as bar:

            def show(p: dict[str, Any]) -> None:
                bar.update(completed=p["rows"], total=p.get("total_rows"))

            summary = predict_to(
                model, inputs, output, read, out_format=out_format, session_config=cfg,
                no_upgrade=no_upgrade, progress=show, isolate=True,
                limits=limits,
            ).to_dict()  # fmt: skip
        from modelforge.text import plural

        out.info(
            f"{plural(summary['rows'], 'row')} in {plural(summary['runs'], 'onnxruntime run')} "
            f"({summary['mode']} mode), "
            f"{summary['seconds']:.2f} s; providers used: {', '.join(summary['providers_used'])}",
            verbose_only=True,
        )
        out.emit(summary, None)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
