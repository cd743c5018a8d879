"""The Typer application: root options and command registration.

Commands live one group per module under ``modelforge.cli``; each is thin (parse, call one
core function, render). Nothing heavy (onnx, onnxruntime, pandas, polars) is imported here.
"""

from __future__ import annotations

from typing import Annotated

import typer

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


def _register() -> None:
    for name in ("models", "validate", "inspect", "convert", "predict", "bench", "providers"):
        try:
            module = __import__(f"modelforge.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == f"modelforge.cli.{name}":
                continue  # command not built in this checkout
            raise
        module.register(app)


_register()


def main() -> None:
    app()
