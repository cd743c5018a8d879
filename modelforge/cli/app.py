"""The Typer application: root options and command registration.

Commands live one group per module under ``modelforge.cli``; each is thin (parse, call one
core function, render). Nothing heavy (onnx, onnxruntime, pandas, polars) is imported here.
"""

from __future__ import annotations

from importlib import import_module
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelforge import __version__
from modelforge.cli.common import GlobalOptions

app = typer.Typer(
    name="modelforge",
    help="ModelForge: a local store, validator, inspector and batch predictor for ONNX models.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"ModelForge {__version__}"]
    for dist in ("onnx", "onnxruntime"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return "\n".join(parts)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(_version_text())
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Model store root (default: $MODELFORGE_HOME, else the user data dir).",
            metavar="PATH",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr.")
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print ModelForge, onnx and onnxruntime versions and exit.",
        ),
    ] = False,
) -> None:
    """ModelForge: a local store, validator, inspector and batch predictor for ONNX models."""
    from modelforge import paths
    from modelforge.cli.common import install_unraisable_hook

    install_unraisable_hook(debug)
    if store is not None and not store.strip():  # Path("") is the current folder
        raise typer.BadParameter("must name a folder, not be empty", param_hint="'--store'")
    paths.set_store_override(store)
    ctx.obj = GlobalOptions(debug=debug, quiet=quiet, verbose=verbose)


# Commands are imported only when used: `modelforge --help` lists them from this table, and
# running one command builds only that command (Typer's per-command set-up costs ~5 ms each).
# tests/test_cli_app.py checks that each summary is its command's docstring summary.
COMMANDS: dict[str, str] = {
    "models": "Manage the local model store: add, set, list, show, tag, verify, export, import.",
    "validate": (
        "Check a model: file, parse, external data, structure, shapes, runtime, session, run."
    ),
    "inspect": "Show a model's metadata, inputs/outputs, initializers, ops and external data.",
    "predict": "Run a model on CSV, TSV, NPY, NPZ, Parquet, JSON Lines or JSON data.",
    "bench": "Measure cold start, latency and throughput per provider.",
    "convert": "Convert a model to another opset; written only if outputs stay the same.",
    "providers": "List the execution providers this onnxruntime build offers, with short names.",
    "serve": "Serve models over the KServe v2 / Open Inference Protocol (HTTP, optional gRPC).",
}


def load_command(name: str) -> Any:
    """Build the click command for one top-level command (imports its module)."""
    import typer.main

    module = import_module(f"modelforge.cli.{name}")
    holder = typer.Typer(
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,  # --install-completion belongs to the top level only
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    module.register(holder)
    built = typer.main.get_command(holder)
    commands = getattr(built, "commands", None)
    if commands and name in commands:
        return commands[name]
    built.name = name
    return built


# Root options accepted after the command too (`predict m d.csv --debug`): name -> takes a value
GLOBAL_OPTIONS: dict[str, bool] = {
    "--store": True,
    "--debug": False,
    "--quiet": False,
    "-q": False,
    "--verbose": False,
    "-v": False,
}


def _is_global(token: str) -> bool:
    if token in GLOBAL_OPTIONS or token.startswith("--store="):
        return True
    return len(token) > 2 and token[0] == "-" and token[1] != "-" and set(token[1:]) == {"v"}


def _leaf_value_options(command: Any) -> tuple[set[str], set[str]]:
    """The option names of ``command`` (and of its subcommands) that take a value, and all
    of its option names: a leaf's own ``-v`` or a value like ``-o -q`` is left alone."""
    valued: set[str] = set()
    names: set[str] = set()
    stack = [command]
    while stack:
        cmd = stack.pop()
        for param in getattr(cmd, "params", []):
            opts = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            names.update(opts)
            if getattr(param, "param_type_name", "") == "option" and not (
                getattr(param, "is_flag", False) or getattr(param, "count", False)
            ):
                valued.update(opts)
        stack.extend(getattr(cmd, "commands", {}).values())
    return valued, names


def hoist_global_options(args: list[str], command: Any) -> tuple[list[str], list[str]]:
    """Split the tokens after the command name into root options (to be moved before it)
    and the command's own tokens; nothing after ``--`` moves."""
    valued, names = _leaf_value_options(command)
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            kept.extend(args[i:])
            break
        if token in names or token.split("=", 1)[0] in names:
            kept.append(token)
            if token in valued and i + 1 < len(args):
                kept.append(args[i + 1])
                i += 1
        elif _is_global(token):
            moved.append(token)
            if GLOBAL_OPTIONS.get(token) and i + 1 < len(args):
                moved.append(args[i + 1])
                i += 1
        else:
            kept.append(token)
        i += 1
    return moved, kept


def _command_index(args: list[str]) -> int | None:
    """Where the command name is among the root's arguments."""
    i = 0
    while i < len(args):
        if args[i] == "--store":
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            return i
    return None


class LazyGroup(TyperGroup):
    """The root group: lists COMMANDS without importing them, builds one on demand,
    suggests close matches for a mistyped command and accepts root options after it."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        at = _command_index(args)
        if at is not None and args[at] in COMMANDS and not ctx.resilient_parsing:
            moved, kept = hoist_global_options(args[at + 1 :], load_command(args[at]))
            args = [*args[:at], *moved, args[at], *kept]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and name not in COMMANDS and not name.startswith("-") and not ctx.resilient_parsing:
            from difflib import get_close_matches

            matches = get_close_matches(name, list(COMMANDS))
            hint = " Did you mean " + ", ".join(f"'{m}'" for m in matches) + "?"
            ctx.fail(f"No such command '{name}'." + (hint if matches else ""))
        return super().resolve_command(ctx, args)


app.info.cls = LazyGroup


def main() -> None:
    from modelforge.cli.common import install_unraisable_hook

    install_unraisable_hook()
    app()
