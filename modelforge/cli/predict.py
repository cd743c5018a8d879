"""``modelforge predict``: batch inference from files or stdin to a file or stdout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.cluster_predict import PartsArgs
from modelforge.cli.common import JsonOpt, ModelArg, NoUpgradeOpt, run, split_csv_option
from modelforge.cli.options import DataArgs, JobLimitsArgs, SessionArgs, option_groups

if TYPE_CHECKING:
    from modelforge.data.options import PredictOptions
    from modelforge.engine.isolate import Limits
    from modelforge.engine.session import SessionConfig
    from modelforge.render import Renderer

InputsArg = Annotated[
    list[str] | None,
    typer.Argument(help="Input files; '-' or none reads stdin (CSV).", metavar="[INPUT]..."),
]
OutputOpt = Annotated[
    str | None, typer.Option("--output", "-o", help="Output file (default: stdout).")
]
OutputFormatOpt = Annotated[
    str | None,
    typer.Option("--output-format", help="Output format (default from -o, else csv)."),
]
ExplainOpt = Annotated[
    bool, typer.Option("--explain", help="Show the mapping and batch plan; do not run.")
]
FallbackOpt = Annotated[
    bool, typer.Option("--fallback", help="Fall back to available providers with a warning.")
]


@dataclass(frozen=True)
class PredictSessionArgs(SessionArgs):
    """SessionArgs plus provider fallback and the in-memory opset upgrade switch."""

    fallback: FallbackOpt = False
    no_upgrade: NoUpgradeOpt = False

    def _extra(self) -> dict[str, Any]:
        return {**super()._extra(), "fallback": self.fallback}


@dataclass(frozen=True)
class PredictDataArgs(DataArgs):
    """DataArgs plus what only predict reads: inline data, kept columns, text options."""

    data_json: Annotated[
        str | None, typer.Option("--data", help='Inline JSON input, e.g. {"x": [[1.0, 2.0]]}.')
    ] = None
    keep: Annotated[
        str | None, typer.Option("--keep", help="Columns copied to the output (never fed).")
    ] = None
    whole: Annotated[
        bool,
        typer.Option("--whole", help="Run once on the whole arrays instead of batches of rows."),
    ] = False
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="Text encoding of CSV/TSV input (utf-8).")
    ] = None
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV delimiter (default , or tab for TSV).")
    ] = None
    outputs: Annotated[
        str | None, typer.Option("--outputs", help="Comma-separated model outputs to write.")
    ] = None

    def options(self) -> PredictOptions:
        """The PredictOptions of these values (validated there, once)."""
        from modelforge.data.options import PredictOptions

        return PredictOptions(
            **super().build(),
            keep=split_csv_option(self.keep),
            encoding=self.encoding,
            delimiter=self.delimiter,
            outputs=split_csv_option(self.outputs),
            data_json=self.data_json,
            whole=self.whole,
        )


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


@option_groups(
    data=PredictDataArgs, session=PredictSessionArgs, limits=JobLimitsArgs, parts=PartsArgs
)
def predict_cmd(
    ctx: typer.Context,
    model: ModelArg,
    data: PredictDataArgs,
    session: PredictSessionArgs,
    limits: JobLimitsArgs,
    parts: PartsArgs,
    inputs: InputsArg = None,
    output: OutputOpt = None,
    out_format: OutputFormatOpt = None,
    explain: ExplainOpt = False,
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
    with run(ctx, "predict --explain" if explain else "predict", json_out) as out:
        if not explain:
            _check_output(output, out_format, json_out)
        read = data.options()
        if explain:
            from modelforge.inference import explain as explain_fn

            out.emit(explain_fn(model, inputs, read), _render_explain)
            return
        cfg, lim, no_upgrade = session.build(), limits.build(), session.no_upgrade
        if parts.wanted(output):
            from modelforge.cli.cluster_predict import predict_parts

            predict_parts(out, lim, model=model, inputs=list(inputs or []), out_dir=output,
                          options=read, session_config=cfg, no_upgrade=no_upgrade,
                          out_format=out_format, **parts.build())  # fmt: skip
            return
        job = (model, inputs, output, read, out_format, cfg, no_upgrade, lim)
        _predict_file(out, *job)


def _check_output(output: str | None, out_format: str | None, json_out: bool) -> None:
    """Predictions need somewhere to go that is not the envelope or a terminal."""
    if output not in (None, "-"):
        return
    if json_out:
        from modelforge.errors import UsageError

        raise UsageError(
            "--json writes the summary to stdout, so predictions need -o FILE",
            hint="add -o predictions.csv, or drop --json",
            code="json_needs_output",
        )
    from modelforge.render import refuse_binary_to_terminal

    refuse_binary_to_terminal(out_format)


def _predict_file(
    out: Renderer, model: str, inputs: list[str] | None, output: str | None,
    read: PredictOptions, out_format: str | None, cfg: SessionConfig, no_upgrade: bool,
    lim: Limits,
) -> None:  # fmt: skip
    """One predict_to (in the guarded child), with progress and the summary."""
    from modelforge.inference import predict_to
    from modelforge.text import plural

    with out.progress("predicting", unit="rows") as bar:

        def show(p: dict[str, Any]) -> None:
            bar.update(completed=p["rows"], total=p.get("total_rows"))

        summary = predict_to(
            model, inputs, output, read, out_format=out_format, session_config=cfg,
            no_upgrade=no_upgrade, progress=show, isolate=True, limits=lim,
        ).to_dict()  # fmt: skip
    out.info(
        f"{plural(summary['rows'], 'row')} in {plural(summary['runs'], 'onnxruntime run')} "
        f"({summary['mode']} mode), "
        f"{summary['seconds']:.2f} s; providers used: {', '.join(summary['providers_used'])}",
        verbose_only=True,
    )
    out.emit(summary, None)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
