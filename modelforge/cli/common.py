"""Shared CLI plumbing: global options, the per-command runner that maps errors to exits.

Every command body looks like::

    with run(ctx, "models list", json_out) as out:
        result = core_function(...)
        out.emit(result, render_models_list)

``run`` is the one place where ModelForgeError becomes a message and an exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from modelforge.errors import ExitCode, ModelForgeError
from modelforge.render import STDOUT_WRITE_FAILED, Renderer


@dataclass
class GlobalOptions:
    debug: bool = False
    quiet: bool = False
    verbose: int = 0


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Write one JSON envelope to stdout instead of text.")
]


# Options shared by several commands: declared once so that names and help stay the same.
def _complete_model(ctx: typer.Context, incomplete: str) -> list[str]:
    from modelforge.cli.complete import complete_model

    return complete_model(ctx, incomplete)


ModelArg = Annotated[
    str,
    typer.Argument(
        help="Model path or store reference (NAME[:VERSION|:ALIAS]).",
        metavar="MODEL",
        autocompletion=_complete_model,
    ),
]
ProviderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--provider",
        metavar="P",
        help="Execution provider (cpu, cuda, tensorrt, ... or a full onnxruntime name), in "
        "priority order; repeat.",
    ),
]
ProviderOptionOpt = Annotated[
    list[str] | None,
    typer.Option("--provider-option", metavar="K=V", help="Option for the first provider; repeat."),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", metavar="N", help="onnxruntime intra-op threads (0 = its default)."),
]
OptLevelOpt = Annotated[
    str | None,
    typer.Option(
        "--opt-level", metavar="L", help="Graph optimisation: disable|basic|extended|all."
    ),
]
CustomOpsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--custom-ops",
        metavar="PATH",
        help="Custom-op library to register (loading it runs its code); repeat.",
    ),
]
DimOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dim", metavar="NAME=VALUE", help="Size of a symbolic dimension (default 1); repeat."
    ),
]
RtolOpt = Annotated[
    float, typer.Option("--rtol", metavar="X", help="Relative tolerance for parity.")
]
AtolOpt = Annotated[
    float, typer.Option("--atol", metavar="X", help="Absolute tolerance for parity.")
]
NoUpgradeOpt = Annotated[
    bool, typer.Option("--no-upgrade", help="Do not upgrade too-old opsets in memory.")
]
# predict and bench: the whole job runs in one guarded child (engine/isolate.py)
JobMemoryLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--memory-limit",
        metavar="MB",
        help="Address-space cap in MiB for the guarded child (default: "
        "$MODELFORGE_MEMORY_MB, else min(8192, 75% of RAM); at least 4096; 0 = none).",
    ),
]
JobTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="S",
        help="Stop after S seconds (default: none; $MODELFORGE_TIMEOUT does not apply).",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="S",
        help="Wall-clock limit in seconds for the guarded child process "
        "(default: $MODELFORGE_TIMEOUT, else 120; 0 = none).",
    ),
]
MemoryLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--memory-limit",
        metavar="MB",
        help="Address-space cap in MiB for the guarded child process "
        "(default: $MODELFORGE_MEMORY_MB, else min(8192, 75% of RAM); 0 = none).",
    ),
]


def global_options(ctx: typer.Context | None) -> GlobalOptions:
    node: Any = ctx
    while node is not None:
        if isinstance(node.obj, GlobalOptions):
            return node.obj
        node = node.parent
    return GlobalOptions()


def _silence_broken_pipe() -> None:
    """stdout's reader went away (``| head``): end quietly, like other Unix tools."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_debug_unraisable = False


def _unraisable(hook_args: Any) -> None:
    """Ctrl-C or a closed pipe during garbage collection (``Exception ignored in:
    <generator ...>``) is not worth a traceback; anything else keeps Python's report."""
    if not _debug_unraisable and issubclass(
        hook_args.exc_type, (KeyboardInterrupt, BrokenPipeError)
    ):
        return
    sys.__unraisablehook__(hook_args)


def install_unraisable_hook(debug: bool = False) -> None:
    """Called once at the CLI edge (``main``); ``--debug`` keeps every report."""
    global _debug_unraisable
    _debug_unraisable = debug
    sys.unraisablehook = _unraisable


def _print_traceback(err: BaseException) -> None:
    import traceback

    traceback.print_exception(err, file=sys.stderr)
    child_tb = getattr(err, "traceback", "")
    if isinstance(child_tb, str) and child_tb:
        sys.stderr.write("traceback in the child process:\n" + child_tb.rstrip("\n") + "\n")


def _report(out: Renderer, err: ModelForgeError, debug: bool) -> int:
    if debug:
        _print_traceback(err)
    out.error(err)
    return int(err.exit_code)


@contextmanager
def run(ctx: typer.Context | None, command: str, json_mode: bool = False) -> Iterator[Renderer]:
    """Run one command body: render errors, choose the exit code, keep stdout clean.

    The one mapping from outcomes to exit codes: a ModelForgeError (also one raised by
    ``Renderer.emit_failure`` after rendering a failed result) is its code; Ctrl-C is
    ``interrupted`` (130), with an envelope in JSON mode; a closed stdout ends quietly (0);
    anything else is a bug, InternalError (1). Tracebacks only with ``--debug``.
    """
    from modelforge.errors import InternalError, Interrupted

    opts = global_options(ctx)
    out = Renderer(
        command, json_mode=json_mode, quiet=opts.quiet, verbose=opts.verbose, debug=opts.debug
    )
    out.attach_logging()
    code: int = ExitCode.OK
    try:
        yield out
        out.flush()
    except ModelForgeError as err:
        if err.code == STDOUT_WRITE_FAILED:
            _silence_broken_pipe()  # what could not be written is dropped, not retried at exit
        code = _report(out, err, opts.debug)
    except BrokenPipeError:
        _silence_broken_pipe()
        code = ExitCode.OK
    except KeyboardInterrupt as exc:
        if opts.debug:
            _print_traceback(exc)
        code = _report(out, Interrupted("interrupted (Ctrl-C)"), False)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: say so, keep the traceback behind --debug
        bug = InternalError(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="this is a bug in ModelForge; rerun with --debug for the traceback and report it",
        )
        if opts.debug:
            _print_traceback(exc)
        out.error(bug)
        code = ExitCode.INTERNAL
    finally:
        out.detach_logging()
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def parse_key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options into a dict, with a clear error."""
    from modelforge.errors import UsageError
    from modelforge.text import escape

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"{what} '{escape(item)}' is not KEY=VALUE",
                hint=f"write it as {what} key=value",
            )
        out[key] = value
    return out


def split_csv_option(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
