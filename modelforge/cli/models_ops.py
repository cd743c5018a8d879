"""`modelforge models rm | tag | untag | verify | export | import`: changing, checking and
moving stored versions (registered on the ``models`` app of :mod:`modelforge.cli.models`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelforge.cli.common import JsonOpt, MemoryLimitOpt, TimeoutOpt, run
from modelforge.cli.models import _render_add, app
from modelforge.render import Renderer
from modelforge.text import human_bytes, safe


# rm / tag / untag ---------------------------------------------------------------------------
@app.command("rm")
def rm_cmd(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="NAME:VERSION, NAME:ALIAS, or NAME (latest).")
    ],
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
        from modelforge.store.ops import aliases_removed_by, remove

        aliases = aliases_removed_by(ref, all_versions=all_versions)
        if (all_versions or aliases) and not yes:
            _confirm_rm(ref, all_versions, aliases)
        result = remove(ref, all_versions=all_versions)
        out.emit(result, lambda o, r: o.line("removed " + ", ".join(r.removed)))


def _confirm_rm(ref: str, all_versions: bool, aliases: list[str]) -> None:
    """Ask (in a terminal) before removing every version or an aliased one; without a
    terminal, refuse with a usage error naming what would go (pass --yes)."""
    import sys

    from modelforge.errors import UsageError

    what = f"every version of '{safe(ref)}'" if all_versions else f"'{safe(ref)}'"
    named = f" (the alias(es) {', '.join(aliases)} would be removed with it)" if aliases else ""
    if sys.stdin is None or not sys.stdin.isatty():  # None: started with stdin closed
        raise UsageError(
            f"refusing to remove {what}{named} without confirmation",
            hint="pass --yes"
            + (" (or move the aliases first with 'modelforge models tag')" if aliases else ""),
            code="confirmation_needed",
        )
    if not typer.confirm(f"Remove {what}{named}?", err=True):
        raise UsageError("nothing removed", code="aborted")


@app.command("tag")
def tag_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME:VERSION (or NAME for latest).")],
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias, e.g. prod.")],
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
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name.")],
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias to remove.")],
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
    ref: Annotated[
        str | None, typer.Argument(metavar="REF", help="A model or version (default: all).")
    ] = None,
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
            return
        first = result.problems[0]
        out.emit_failure(
            result,
            CheckFailedError(
                f"store verification found {len(result.problems)} problem(s), first: "
                f"{first['ref']} {first['file']}: {first['problem']}",
                hint="restore the files, or remove the damaged versions with "
                "'modelforge models rm'",
                code="verify_failed",
            ),
            _render_verify,
        )


# export / import ------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="NAME, NAME:VERSION or NAME:ALIAS.")],
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
    archive: Annotated[
        str, typer.Argument(metavar="ARCHIVE", help="A .tar.gz made by 'models export'.")
    ],
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
