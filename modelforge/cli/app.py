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

    paths.set_store_override(store)
    ctx.obj = GlobalOptions(debug=debug, quiet=quiet, verbose=verbose)


# Commands are imported only when used: `modelforge --help` lists them from this table, and
# running one command builds only that command (Typer's per-command set-up costs ~5 ms each).
# tests/test_cli_app.py checks that each summary is its command's docstring summary.
COMMANDS: dict[str, str] = {
    "models": "Manage the local model store: add, list, show, tag, verify, export, import.",
    "validate": (
        "Check a model: file, parse, external data, structure, shapes, runtime, session, run."
    ),
    "inspect": "Show a model's metadata, inputs/outputs, initializers, ops and external data.",
    "predict": "Run a model on CSV, TSV, NPY, NPZ, Parquet or JSON Lines data.",
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
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    module.register(holder)
    built = typer.main.get_command(holder)
    commands = getattr(built, "commands", None)
    if commands and name in commands:
        return commands[name]
    built.name = name
    return built


class LazyGroup(TyperGroup):
    """The root group: lists COMMANDS without importing them, builds one on demand."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


app.info.cls = LazyGroup


def main() -> None:
    app()
