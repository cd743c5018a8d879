"""`modelforge models ...`: the local model store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelforge.cli.common import (
    JsonOpt,
    MemoryLimitOpt,
    TimeoutOpt,
    parse_key_values,
    run,
    split_csv_option,
)
from modelforge.errors import UsageError
from modelforge.render import Renderer, table
from modelforge.text import human_bytes, safe

ColumnsOpt = Annotated[
    str | None,
    typer.Option("--columns", help="Ordered CSV columns feeding a single 2-D input: a,b,c."),
]
ColumnsFromOpt = Annotated[
    str | None,
    typer.Option(
        "--columns-from",
        metavar="DATA",
        help="Take --columns from the header of a CSV or Parquet file holding exactly the "
        "feature columns, in order (no id or label column).",
    ),
]

app = typer.Typer(
    help="Manage the local model store: add, set, list, show, tag, verify, export, import.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")


def _created(meta: dict[str, Any]) -> str:
    text = str(meta.get("created_at") or "")
    return text[:19].replace("T", " ")


def _opsets(opsets: dict[str, int]) -> str:
    from modelforge.model.opset import format_opsets

    return format_opsets(opsets)


# add ------------------------------------------------------------------------------------
def _render_add(out: Renderer, r: Any) -> None:
    if r.symlink_resolved_to:
        out.info(f"note: '{safe(r.source)}' is a symlink to '{safe(r.symlink_resolved_to)}'")
    if r.forced and r.created:
        out.warning(f"stored {r.ref} with --force although validation failed")
    if r.not_applied:
        out.warning(
            f"the same bytes are already stored as {r.ref}; not applied: "
            f"{', '.join(r.not_applied)} (change them with 'modelforge models set {r.ref} "
            + " ".join(f"{o} ..." for o in r.not_applied)
            + "')"
        )
    if r.renumbered_from is not None:
        out.info(
            f"note: version {r.renumbered_from} of the archive is in use, or was used and "
            "removed, in this store (numbers are never reused); "
            f"imported as {r.ref}"
        )
    for note in r.notes:
        out.warning(safe(note, 400))
    verb = "added" if r.created else "already stored as"
    aliases = f" (aliases: {', '.join(r.aliases)})" if r.aliases else ""
    out.line(f"{verb} {r.ref}{aliases}  {human_bytes(r.size)}  sha256 {r.sha256[:12]}")
    if r.examples:
        out.line(
            f"  golden examples: {r.examples['rows']} rows, sha256 {r.examples['sha256'][:12]}"
        )


@app.command("add")
def add_cmd(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="The .onnx file to store.", metavar="FILE")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name ([a-z0-9._-]).")],
    version: Annotated[
        int | None, typer.Option("--version", help="Explicit version number (default: next).")
    ] = None,
    alias: Annotated[
        list[str] | None, typer.Option("--alias", "-a", help="Alias to point at it (repeat).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE label (repeat).")
    ] = None,
    columns: ColumnsOpt = None,
    columns_from: ColumnsFromOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Store even if validation fails.")] = False,
    example: Annotated[
        str | None,
        typer.Option(
            "--example",
            metavar="DATA",
            help="Store golden examples: the first rows of DATA (any format predict reads), "
            "mapped as predict maps them, and the outputs they give.",
        ),
    ] = None,
    example_rows: Annotated[
        int,
        typer.Option("--example-rows", metavar="N", help="Rows of --example to store (max 10000)."),
    ] = 256,
    timeout: TimeoutOpt = None,
    memory_limit: MemoryLimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a model and store it as a new version.

    Example: modelforge models add iris.onnx --name iris --alias prod --columns-from train.csv
    """
    with run(ctx, "models add", json_out) as out:
        from modelforge.api import add_model

        if example is None and _given(ctx, "example_rows"):
            raise UsageError(
                "--example-rows needs --example DATA (it is the number of rows of DATA to store)",
                hint="add --example DATA, or drop --example-rows",
                code="invalid_option",
            )
        result = add_model(
            file,
            name,
            version=version,
            aliases=alias or [],
            description=description,
            labels=parse_key_values(label, "--label"),
            columns=split_csv_option(columns),
            columns_from=columns_from,
            force=force,
            timeout_s=timeout,
            memory_mb=memory_limit,
            example=example,
            example_rows=example_rows,
        )
        out.emit(result, _render_add)


def _given(ctx: typer.Context, param: str) -> bool:
    """Whether the option was given on the command line (not just its default); typer
    vendors click, so the source is compared by name."""
    return getattr(ctx.get_parameter_source(param), "name", "") == "COMMANDLINE"


# list / show / path -----------------------------------------------------------------------
def _render_list(out: Renderer, r: Any) -> None:
    for p in r.problems:
        out.warning(safe(p, 300))
    if not r.models and r.name:
        out.info(
            f"no model named '{safe(r.name, 80)}' in the store at {safe(r.store)}; "
            "'modelforge models list' shows every name"
        )
        return
    if not r.models:
        out.info(
            f"no models in the store at {safe(r.store)}; add one with "
            "'modelforge models add FILE --name NAME'"
        )
        return
    t = table("NAME", "VERSION", "ALIASES", "SIZE", "OPSET", "CREATED")
    forced = 0
    for m in r.models:
        mark = " (forced)" if m.meta.get("forced") else ""
        forced += 1 if mark else 0
        t.add_row(
            m.name,
            f"{m.version}{mark}",
            ", ".join(m.aliases),
            human_bytes(m.size),
            _opsets((m.meta.get("onnx") or {}).get("opset_imports", {})),
            _created(m.meta),
        )
    out.print(t)
    if forced:
        out.info(
            f"{forced} version(s) marked (forced) were stored with --force although validation "
            "failed; 'modelforge models show NAME:VERSION' says which checks"
        )


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Only this model's versions.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List stored versions, newest first.

    Example: modelforge models list --json
    """
    with run(ctx, "models list", json_out) as out:
        from modelforge.store.catalog import list_models

        out.emit(list_models(name=name), _render_list)


def _render_show(out: Renderer, mv: Any) -> None:
    out.print(_show_fields(mv))
    meta = mv.meta
    out.print(_show_io(meta.get("schema") or {}))
    _render_examples(out, meta)
    report = meta.get("validation")
    if report:
        v = table("CHECK", "STATUS", "MESSAGE", title="validation at add time")
        for c in report.get("checks", []):
            v.add_row(safe(c.get("name")), safe(c.get("status")), safe(c.get("message"), 160))
        out.print(v)
    if meta.get("forced"):
        failed = [
            f"{c.get('name')} ({c.get('code')})"
            for c in (report or {}).get("checks", [])
            if c.get("status") == "fail"
        ]
        out.warning(
            f"{mv.ref} was stored with --force although validation failed"
            + (f": {safe(', '.join(failed), 300)}" if failed else "")
        )
    history = meta.get("metadata_history") or []
    if history:
        out.info(f"metadata changed {len(history)} time(s) since it was added, last at "
                 f"{safe(history[-1].get('at'))} (see --json)")  # fmt: skip


def _show_fields(mv: Any) -> Any:
    meta = mv.meta
    onnx_info = meta.get("onnx") or {}
    rows = [
        ("ref", mv.ref),
        ("aliases", ", ".join(mv.aliases) or "-"),
        ("path", str(mv.model_path)),
        ("size", human_bytes(mv.size)),
        ("sha256", mv.sha256),
        ("created", str(meta.get("created_at"))),
        ("source", str(meta.get("source_path"))),
        ("description", meta.get("description") or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()) or "-"),
        ("columns", ", ".join(meta.get("columns") or []) or "-"),
        ("forced", _forced_text(meta)),
        ("ir_version", str(onnx_info.get("ir_version"))),
        ("opsets", _opsets(onnx_info.get("opset_imports", {}))),
        (
            "producer",
            f"{onnx_info.get('producer_name', '')} {onnx_info.get('producer_version', '')}",
        ),
        ("graph", onnx_info.get("graph_name", "")),
        ("tools", ", ".join(f"{k} {v}" for k, v in (meta.get("tool_versions") or {}).items())),
    ]
    t = table("FIELD", "VALUE")
    for k, v in rows:
        t.add_row(k, safe(v, 300))
    for k, v in (onnx_info.get("metadata_props") or {}).items():
        t.add_row(f"meta:{safe(k, 60)}", safe(v, 200))
    return t


def _show_io(schema: dict[str, Any]) -> Any:
    from modelforge.model.schema import format_shape

    io_table = table("KIND", "NAME", "TYPE", "SHAPE")
    for kind in ("inputs", "outputs"):
        for spec in schema.get(kind, []):
            io_table.add_row(
                kind[:-1],
                safe(spec.get("name"), 80),
                safe(spec.get("type")),
                safe(format_shape(spec.get("shape"))),
            )
    return io_table


def _forced_text(meta: dict[str, Any]) -> str:
    if not meta.get("forced"):
        return "no"
    failed = [
        str(c.get("name"))
        for c in (meta.get("validation") or {}).get("checks", [])
        if c.get("status") == "fail"
    ]
    return "yes: failed " + (", ".join(failed) if failed else "(not recorded)")


def _render_examples(out: Renderer, meta: dict[str, Any]) -> None:
    from modelforge.store.examples import summary

    ex = summary(meta)
    if ex is None:
        return
    t = table("FIELD", "VALUE", title="golden examples")
    t.add_row("rows", str(ex["rows"]))
    t.add_row("sources", safe(", ".join(map(str, ex["sources"] or [])), 300))
    t.add_row("sha256", str(ex["sha256"]))
    t.add_row("size", human_bytes(int(ex["size"] or 0)))
    t.add_row("recorded with", safe(f"onnxruntime {ex['onnxruntime']} on {ex['provider']}"))
    t.add_row("outputs", safe(", ".join(map(str, ex["outputs"])), 300))
    out.print(t)


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME, NAME:VERSION or NAME:ALIAS.")],
    json_out: JsonOpt = False,
) -> None:
    """Show everything recorded about a stored version.

    Example: modelforge models show iris:prod
    """
    with run(ctx, "models show", json_out) as out:
        from modelforge.store.catalog import find
        from modelforge.store.layout import Store

        out.emit(find(Store(), ref), _render_show)


def _render_set(out: Renderer, r: Any) -> None:
    if not r.changed:
        out.line(f"{r.ref}: nothing changed (already recorded)")
        return
    for key, change in r.changed.items():
        out.line(f"{r.ref} {key}: {safe(_short(change['old']), 200)} -> "
                 f"{safe(_short(change['new']), 200)}")  # fmt: skip


def _short(value: Any) -> str:
    if value in (None, [], {}):
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


@app.command("set")
def set_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME, NAME:VERSION or NAME:ALIAS.")],
    columns: ColumnsOpt = None,
    columns_from: ColumnsFromOpt = None,
    clear_columns: Annotated[
        bool, typer.Option("--clear-columns", help="Remove the stored column map.")
    ] = False,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE label to set (repeat).")
    ] = None,
    unset_label: Annotated[
        list[str] | None, typer.Option("--unset-label", metavar="KEY", help="Label to remove.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a version's columns, description or labels (stored files never change).

    Example: modelforge models set iris:1 --columns-from train.csv --label team=ml
    """
    with run(ctx, "models set", json_out) as out:
        from modelforge.store.edit import set_metadata

        cols = split_csv_option(columns)
        if columns_from is not None:
            if cols is not None:
                raise UsageError(
                    "--columns and --columns-from cannot be combined", code="invalid_option"
                )
            from modelforge.store.columns import header_columns

            cols = header_columns(columns_from)
        result = set_metadata(
            ref,
            columns=cols,
            clear_columns=clear_columns,
            description=description,
            labels=parse_key_values(label, "--label"),
            remove_labels=list(unset_label or []),
        )
        out.emit(result, _render_set)


@app.command("path")
def path_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME, NAME:VERSION or NAME:ALIAS.")],
    json_out: JsonOpt = False,
) -> None:
    """Print the stored .onnx path (for $(modelforge models path m) in scripts).

    Example: python run.py --model "$(modelforge models path iris:prod)"
    """
    with run(ctx, "models path", json_out) as out:
        from modelforge.store.catalog import find
        from modelforge.store.layout import Store

        mv = find(Store(), ref)
        out.emit({"ref": mv.ref, "path": str(mv.model_path)}, lambda o, r: o.line(r["path"]))


# rm, tag, untag, verify, export and import live in models_ops (registered on the same app)
from modelforge.cli import models_ops as _ops  # noqa: E402, F401


# diff (cli/diff.py) ---------------------------------------------------------------------------
def _register_diff() -> None:
    from modelforge.cli import diff

    diff.register(app)


_register_diff()
