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
from modelforge.render import Renderer, table
from modelforge.text import human_bytes, safe

app = typer.Typer(
    help="Manage the local model store: add, list, show, tag, verify, export, import.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")


def _created(meta: dict[str, Any]) -> str:
    text = str(meta.get("created_at") or "")
    return text[:19].replace("T", " ")


def _opsets(opsets: dict[str, int]) -> str:
    return ", ".join(f"{v}" if d == "ai.onnx" else f"{d} {v}" for d, v in opsets.items())


# add ------------------------------------------------------------------------------------
def _render_add(out: Renderer, r: Any) -> None:
    if r.symlink_resolved_to:
        out.info(f"note: '{safe(r.source)}' is a symlink to '{safe(r.symlink_resolved_to)}'")
    if r.forced:
        out.warning(f"stored {r.ref} with --force although validation failed")
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
    columns: Annotated[
        str | None,
        typer.Option("--columns", help="Ordered CSV columns feeding a single 2-D input: a,b,c."),
    ] = None,
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

    Example: modelforge models add iris.onnx --name iris --alias prod --columns a,b,c,d
    """
    with run(ctx, "models add", json_out) as out:
        from modelforge.store.add import add_model

        result = add_model(
            file,
            name,
            version=version,
            aliases=alias or [],
            description=description,
            labels=parse_key_values(label, "--label"),
            columns=split_csv_option(columns),
            force=force,
            timeout_s=timeout,
            memory_mb=memory_limit,
            example=example,
            example_rows=example_rows,
        )
        out.emit(result, _render_add)


# list / show / path -----------------------------------------------------------------------
def _render_list(out: Renderer, r: Any) -> None:
    for p in r.problems:
        out.warning(safe(p, 300))
    if not r.models:
        out.info(
            f"no models in the store at {safe(r.store)}; add one with "
            "'modelforge models add FILE --name NAME'"
        )
        return
    t = table("NAME", "VERSION", "ALIASES", "SIZE", "OPSET", "CREATED")
    for m in r.models:
        t.add_row(
            m.name,
            str(m.version),
            ", ".join(m.aliases),
            human_bytes(m.size),
            _opsets((m.meta.get("onnx") or {}).get("opset_imports", {})),
            _created(m.meta),
        )
    out.print(t)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List stored versions, newest first.

    Example: modelforge models list --json
    """
    with run(ctx, "models list", json_out) as out:
        from modelforge.store.catalog import list_models

        out.emit(list_models(name=name), _render_list)


def _render_show(out: Renderer, mv: Any) -> None:
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
    out.print(t)
    schema = meta.get("schema") or {}
    io_table = table("KIND", "NAME", "TYPE", "SHAPE")
    for kind in ("inputs", "outputs"):
        for spec in schema.get(kind, []):
            shape = spec.get("shape")
            shape_txt = (
                "?"
                if shape is None
                else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
            )
            io_table.add_row(
                kind[:-1], safe(spec.get("name"), 80), safe(spec.get("type")), safe(shape_txt)
            )
    out.print(io_table)
    _render_examples(out, meta)
    report = meta.get("validation")
    if report:
        v = table("CHECK", "STATUS", "MESSAGE", title="validation at add time")
        for c in report.get("checks", []):
            v.add_row(safe(c.get("name")), safe(c.get("status")), safe(c.get("message"), 160))
        out.print(v)
    if meta.get("forced"):
        out.warning(f"{mv.ref} was stored with --force although validation failed")


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
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME:ALIAS.")],
    json_out: JsonOpt = False,
) -> None:
    """Show everything recorded about a stored version.

    Example: modelforge models show iris:prod
    """
    with run(ctx, "models show", json_out) as out:
        from modelforge.store.catalog import find
        from modelforge.store.layout import Store

        out.emit(find(Store(), ref), _render_show)


@app.command("path")
def path_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME:ALIAS.")],
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


# rm / tag / untag ---------------------------------------------------------------------------
@app.command("rm")
def rm_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, NAME:ALIAS, or NAME (latest).")],
    all_versions: Annotated[
        bool, typer.Option("--all", help="Remove every version of NAME.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove one version, or every version with --all.

    Example: modelforge models rm iris:1
    """
    with run(ctx, "models rm", json_out) as out:
        from modelforge.errors import UsageError
        from modelforge.store.ops import remove

        if all_versions and not yes:
            import sys

            if not sys.stdin.isatty():
                raise UsageError(
                    f"refusing to remove every version of '{safe(ref)}' without confirmation",
                    hint="pass --yes",
                    code="confirmation_needed",
                )
            if not typer.confirm(f"Remove every version of {safe(ref)}?", err=True):
                raise UsageError("nothing removed", code="aborted")
        result = remove(ref, all_versions=all_versions)
        out.emit(result, lambda o, r: o.line("removed " + ", ".join(r.removed)))


@app.command("tag")
def tag_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION (or NAME for latest).")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. prod.")],
    json_out: JsonOpt = False,
) -> None:
    """Point an alias at a version (moves it if it exists).

    Example: modelforge models tag iris:3 prod
    """
    with run(ctx, "models tag", json_out) as out:
        from modelforge.store.ops import tag

        def render(o: Renderer, r: Any) -> None:
            moved = f" (was {r.previous})" if r.previous not in (None, r.version) else ""
            o.line(f"{r.name}:{r.alias} -> {r.version}{moved}")

        out.emit(tag(ref, alias), render)


@app.command("untag")
def untag_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    json_out: JsonOpt = False,
) -> None:
    """Remove an alias.

    Example: modelforge models untag iris prod
    """
    with run(ctx, "models untag", json_out) as out:
        from modelforge.store.ops import untag

        out.emit(
            untag(name, alias),
            lambda o, r: o.line(f"removed alias {r.name}:{r.alias} (was {r.previous})"),
        )


# verify -------------------------------------------------------------------------------------
def _render_verify(out: Renderer, r: Any) -> None:
    for p in r.problems:
        out.line(f"{safe(p['ref'])}  {safe(p['file'])}: {safe(p['problem'], 300)}")
    status = "ok" if r.ok else f"{len(r.problems)} problem(s)"
    out.line(f"verified {len(r.checked)} version(s), {r.files_checked} file(s): {status}")


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="A model or version (default: all).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-hash stored files; exit 9 when anything is missing or corrupt.

    Example: modelforge models verify iris
    """
    with run(ctx, "models verify", json_out) as out:
        from modelforge.errors import CheckFailedError
        from modelforge.store.ops import verify

        result = verify(ref)
        if result.ok:
            out.emit(result, _render_verify)
        else:
            first = result.problems[0]
            raise_err = CheckFailedError(
                f"store verification found {len(result.problems)} problem(s), first: "
                f"{first['ref']} {first['file']}: {first['problem']}",
                hint="restore the files, or remove the damaged versions with "
                "'modelforge models rm'",
                code="verify_failed",
            )
            out.emit_failure(result, raise_err, _render_verify)
            raise typer.Exit(int(raise_err.exit_code))


# export / import ------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME:ALIAS.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Archive to write (.tar.gz).")],
    json_out: JsonOpt = False,
) -> None:
    """Export a version with its metadata to a .tar.gz archive.

    Example: modelforge models export iris:prod -o iris.tar.gz
    """
    with run(ctx, "models export", json_out) as out:
        from modelforge.store.archive import export_version

        out.emit(
            export_version(ref, output),
            lambda o, r: o.line(f"exported {r.ref} to {r.output} ({human_bytes(r.size)})"),
        )


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    archive: Annotated[str, typer.Argument(help="A .tar.gz made by 'models export'.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Store under this name.")] = None,
    version: Annotated[int | None, typer.Option("--version")] = None,
    force: Annotated[bool, typer.Option("--force", help="Store even if validation fails.")] = False,
    timeout: TimeoutOpt = None,
    memory_limit: MemoryLimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import an exported version (hashes verified, model validated again).

    Example: modelforge models import iris.tar.gz --name iris
    """
    with run(ctx, "models import", json_out) as out:
        from modelforge.store.archive import import_archive

        result = import_archive(
            archive,
            name=name,
            version=version,
            force=force,
            timeout_s=timeout,
            memory_mb=memory_limit,
        )
        out.emit(result, _render_add)


# diff (cli/diff.py) ---------------------------------------------------------------------------
def _register_diff() -> None:
    from modelforge.cli import diff

    diff.register(app)


_register_diff()
