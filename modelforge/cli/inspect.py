"""``modelforge inspect``: a fast summary of a model file (no onnxruntime session)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import JsonOpt, ModelArg, run

if TYPE_CHECKING:
    from modelforge.render import Renderer


SUMMARY_ROWS = 10  # overridable initializers listed without --full


def _io_table(title: str, specs: list[dict[str, Any]]) -> Any:
    from modelforge.model.schema import format_shape
    from modelforge.render import table
    from modelforge.text import safe

    t = table("name", "type", "shape", title=title)
    for s in specs:
        t.add_row(safe(s["name"], 60), safe(s["type"], 60), safe(format_shape(s["shape"]), 80))
    return t


def _overridable(out: Renderer, specs: list[dict[str, Any]], full: bool) -> None:
    if full or len(specs) <= SUMMARY_ROWS:
        out.print(_io_table("overridable initializers", specs))
        return
    from modelforge.text import safe

    names = ", ".join(safe(s["name"], 40) for s in specs[:5])
    out.line(f"overridable initializers {len(specs)} (graph inputs with defaults, IR < 4): "
             f"{names}, ... (--full lists all)")  # fmt: skip


def _initializers(out: Renderer, init: dict[str, Any]) -> None:
    from modelforge.model.schema import format_shape
    from modelforge.text import human_bytes, safe

    by_dtype = ", ".join(
        f"{d}: {v['count']} ({human_bytes(v['bytes'])})" for d, v in init["by_dtype"].items()
    )
    out.line(f"initializers {init['count']}, {init['parameters']:,} parameters, "
             f"{human_bytes(init.get('bytes', 0))}"
             + (f"; {by_dtype}" if by_dtype else ""))  # fmt: skip
    if init["count"] > 1:
        for t in init.get("largest", []):
            out.line(f"  largest  {safe(t['name'], 60)}  {t['dtype']} "
                     f"{format_shape(t['shape'])}  {human_bytes(t['bytes'])}")  # fmt: skip


def render_inspection(out: Renderer, r: Any, full: bool = False) -> None:
    from modelforge.model.opset import format_opsets
    from modelforge.render import table
    from modelforge.text import human_bytes, safe

    out.line(f"model      {safe(r.ref, 300)}")
    if r.ref != r.path:
        out.line(f"path       {safe(r.path, 300)}")
    out.line(f"size       {human_bytes(r.size)}   sha256 {r.sha256}")
    out.line(f"ir         {r.ir_version}   opsets {format_opsets(r.opset_import)}")
    producer = f"{r.producer_name} {r.producer_version}".strip() or "-"
    out.line(f"producer   {safe(producer, 120)}   domain {safe(r.domain or '-', 80)}"
             f"   model_version {r.model_version}")  # fmt: skip
    out.line(f"graph      {safe(r.graph_name or '-', 120)}")
    if r.doc_string:
        out.line(f"doc        {safe(r.doc_string, 200)}")
    for key, value in list(r.metadata_props.items())[:20]:
        out.line(f"meta       {safe(key, 60)} = {safe(value, 160)}")
    if len(r.metadata_props) > 20:
        out.line(f"meta       ... {len(r.metadata_props) - 20} more (see --json)")
    out.print(_io_table("inputs", r.inputs))
    if r.overridable_initializers:
        _overridable(out, r.overridable_initializers, full)
    out.print(_io_table("outputs", r.outputs))
    _initializers(out, r.initializers)
    out.line(f"nodes {r.node_count}, subgraphs {r.subgraph_count}, functions {r.function_count}")
    ops = table("domain", "op", "count", title="ops")
    shown = 0
    for domain, counts in r.ops.items():
        for op, n in counts.items():
            if shown < 40 or full:
                ops.add_row(safe(domain, 40), safe(op, 60), str(n))
            shown += 1
    out.print(ops)
    if shown > 40 and not full:
        out.line(f"... {shown - 40} more op types (--full or --json lists all)")
    for f in r.external_data:
        out.line(f"external   {safe(f['location'], 120)}  {human_bytes(f['size'])}"
                 f"  {f['tensors']} tensor(s)")  # fmt: skip
    if r.external_data_error:
        out.line(f"external   UNSAFE: {safe(r.external_data_error, 300)}")
    if r.custom_domains:
        out.line("custom domains " + ", ".join(safe(d, 60) for d in r.custom_domains)
                 + " (need a custom-op library: --custom-ops)")  # fmt: skip


def inspect_cmd(
    ctx: typer.Context,
    model: ModelArg,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="List every overridable initializer and op type (default: a summary)."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show a model's metadata, inputs/outputs, initializers, ops and external data.

    Example: modelforge inspect model.onnx --json
    """
    with run(ctx, "inspect", json_out) as out:
        from modelforge.api import inspect_model

        out.emit(inspect_model(model), lambda o, r: render_inspection(o, r, full))


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
