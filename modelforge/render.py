"""The only place that prints: human output, the JSON envelope, messages on stderr.

Core functions return result objects (frozen dataclasses with ``to_dict()``) and never
print. The CLI hands those results to a :class:`Renderer`, which writes either a human
rendering or exactly one JSON envelope to stdout. Messages (warnings, info, errors,
progress) always go to stderr.

The JSON envelope (version 1)::

    {"modelforge": 1, "command": "models list", "status": "ok" | "error",
     "result": {...} | null, "error": {"code", "message", "hint", "exit_code"} | null,
     "warnings": ["..."]}
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TextIO

from modelforge.errors import ModelForgeError, OutputError
from modelforge.text import escape

if TYPE_CHECKING:
    from rich.console import Console

STDOUT_WRITE_FAILED = "stdout_write_failed"  # the error code of a failed write to stdout


class ProgressHandle(Protocol):
    """What ``Renderer.progress`` yields: report work done, change the total or fields."""

    def advance(self, n: int = 1) -> None: ...

    def update(
        self, completed: int | None = None, total: int | None = None, **fields: Any
    ) -> None: ...


class _NoProgress:
    """The handle when no display is shown (piped stderr, --quiet, --json)."""

    def advance(self, n: int = 1) -> None:
        return None

    def update(self, completed: int | None = None, total: int | None = None, **fields: Any) -> None:
        return None


_NO_PROGRESS = _NoProgress()

ENVELOPE_VERSION = 1
LOGGER_NAME = "modelforge"


def to_jsonable(obj: Any) -> Any:
    """Turn results (dataclasses with to_dict, numpy scalars, paths) into JSON values."""
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return str(obj)  # JSON has no NaN/Infinity; keep the envelope parseable
        return obj
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return to_jsonable(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy array
        return to_jsonable(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def _use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _CollectHandler(logging.Handler):
    """Routes library warnings (logger ``modelforge``) to the renderer."""

    def __init__(self, renderer: Renderer) -> None:
        super().__init__(level=logging.INFO)
        self.renderer = renderer

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.renderer.warning(msg)
        else:
            self.renderer.info(msg, verbose_only=True)


class Renderer:
    """Writes results and messages for one CLI command invocation."""

    def __init__(
        self,
        command: str,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        verbose: int = 0,
        debug: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.command = command
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.debug = debug
        self._stdout = stdout
        self._stderr = stderr
        self.warnings: list[str] = []
        self._out_console: Console | None = None
        self._err_console: Console | None = None
        self._handler: _CollectHandler | None = None
        self.emitted = False
        self._live: Any = None  # the rich Progress being shown, if any

    # streams ------------------------------------------------------------------------
    @property
    def stdout(self) -> TextIO:
        out = self._stdout or sys.stdout
        if out is None or getattr(out, "closed", False):  # started with stdout closed (>&-)
            raise OutputError(
                "cannot write the result to stdout: stdout is closed",
                hint="keep stdout open, or redirect it to a file or /dev/null",
                code="stdout_closed",
            )
        return out

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    def out_console(self) -> Console:
        if self._out_console is None:
            from rich.console import Console

            class _PipeConsole(Console):
                def on_broken_pipe(self) -> None:
                    # rich would exit(1); let the CLI runner end quietly with exit 0 instead
                    raise BrokenPipeError

            color = _use_color(self.stdout)
            self._out_console = _PipeConsole(
                file=self.stdout,
                force_terminal=color,
                no_color=not color,
                highlight=False,
                soft_wrap=False,
                width=None if color else 120,
                emoji=False,
                markup=False,
            )
        return self._out_console

    def err_console(self) -> Console:
        if self._err_console is None:
            from rich.console import Console

            color = _use_color(self.stderr)
            self._err_console = Console(
                file=self.stderr,
                force_terminal=color,
                no_color=not color,
                highlight=False,
                soft_wrap=True,
                emoji=False,
                markup=False,
            )
        return self._err_console

    @property
    def stderr_is_terminal(self) -> bool:
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    # library log capture ------------------------------------------------------------
    def attach_logging(self) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        self._handler = _CollectHandler(self)
        logger.addHandler(self._handler)
        logger.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        logger.propagate = False

    def detach_logging(self) -> None:
        if self._handler is not None:
            logging.getLogger(LOGGER_NAME).removeHandler(self._handler)
            self._handler = None

    # messages (stderr) --------------------------------------------------------------
    def _message(self, prefix: str, text: str, style: str) -> None:
        line = f"{prefix}{text}" if prefix else text
        if self._live is not None:  # above the progress display, which stays at the bottom
            from rich.text import Text

            self._live.console.print(Text(line, style=style if _use_color(self.stderr) else ""))
        elif _use_color(self.stderr):
            from rich.text import Text

            self.err_console().print(Text(line, style=style))
        else:
            self.stderr.write(line + "\n")
            self.stderr.flush()

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        if not self.quiet:
            self._message("warning: ", text, "yellow")

    def info(self, text: str, *, verbose_only: bool = False) -> None:
        if self.quiet or (verbose_only and not self.verbose):
            return
        self._message("", text, "dim")

    def progress(
        self, description: str, *, total: int | None = None, unit: str = "rows"
    ) -> AbstractContextManager[ProgressHandle]:
        """A progress display on stderr for the duration of a ``with`` block.

        A ``rich.progress`` bar with percentage and ETA when ``total`` is known, else a
        spinner; both show the count and the rate (``unit``/s). Shown only when stderr is
        a terminal and not ``--quiet`` and not ``--json``; otherwise the handle does
        nothing. The display is always removed when the block ends (also on errors and
        Ctrl-C), and messages written meanwhile appear above it. Nothing goes to stdout.
        """
        if self.quiet or self.json_mode or not self.stderr_is_terminal:
            return nullcontext(_NO_PROGRESS)
        return self._live_progress(description, total, unit)

    @contextmanager
    def _live_progress(
        self, description: str, total: int | None, unit: str
    ) -> Iterator[ProgressHandle]:
        from modelforge.progress import live_progress

        with live_progress(self.stderr, description, total=total, unit=unit) as (bar, handle):
            previous, self._live = self._live, bar
            try:
                yield handle
            finally:
                self._live = previous

    def error(self, err: ModelForgeError) -> None:
        """Report an error: one line on stderr, plus the envelope on stdout in JSON mode."""
        line = err.message if not err.hint else f"{err.message} Hint: {err.hint}"
        self._message("error: ", escape(line).replace("\\n", " "), "bold red")
        if self.json_mode and not self.emitted:
            # stdout closed or gone: the line on stderr is all that can be said
            with suppress(OutputError, OSError):
                self._write_envelope(status="error", result=None, error=err.to_dict())

    # results (stdout) ---------------------------------------------------------------
    def emit(
        self,
        result: Any,
        human: Callable[[Renderer, Any], None] | None = None,
        *,
        status: str = "ok",
    ) -> None:
        """Write the result: as the JSON envelope, or through ``human``."""
        if self.json_mode:
            self._write_envelope(status=status, result=result, error=None)
        elif human is not None:
            human(self, result)
        self.emitted = True

    def emit_failure(
        self, result: Any, err: ModelForgeError, human: Callable[..., None]
    ) -> NoReturn:
        """A result that ran and failed (validate, verify): the result is data, so it is
        rendered (the envelope carries it with ``status: "error"`` and the error), then
        ``err`` is raised for ``cli.common.run`` to report once and map to its exit code."""
        if self.json_mode:
            self._write_envelope(status="error", result=result, error=err.to_dict())
        else:
            human(self, result)
        self.emitted = True
        raise err

    def _write_envelope(self, *, status: str, result: Any, error: Any) -> None:
        payload = {
            "modelforge": ENVELOPE_VERSION,
            "command": self.command,
            "status": status,
            "result": result,
            "error": error,
            "warnings": list(self.warnings),
        }
        with self._writing():
            self.stdout.write(dumps(payload) + "\n")
            self.stdout.flush()
        self.emitted = True

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Writes to stdout: a full disk or an I/O error is an OutputError (exit 10), not a
        bug; a closed pipe stays a BrokenPipeError (the CLI ends quietly)."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(
                f"cannot write the result to stdout: {exc.strerror or exc}",
                hint="check free disk space where stdout is redirected",
                code=STDOUT_WRITE_FAILED,
            ) from None

    def flush(self) -> None:
        """Flush stdout at the end of a command (errors as in :meth:`_writing`)."""
        out = self._stdout or sys.stdout
        if out is not None and not getattr(out, "closed", False):
            with self._writing():
                out.flush()

    # helpers for human renderers ----------------------------------------------------
    def print(self, renderable: Any = "") -> None:
        """Print a rich renderable (table, text) or a plain string to stdout."""
        with self._writing():
            if isinstance(renderable, str):
                self.stdout.write(renderable + "\n")
            else:
                self.out_console().print(renderable)

    def line(self, text: str = "") -> None:
        with self._writing():
            self.stdout.write(text + "\n")


BINARY_FORMATS = frozenset({"npy", "npz", "parquet"})


def refuse_binary_to_terminal(fmt: str | None, stream: Any = None) -> None:
    """Refuse to write a binary output format to a terminal, as gzip does: it would only
    garble the screen. Call where stdout is chosen as the output (``-o -`` or no ``-o``);
    ``stream`` defaults to ``sys.stdout``. Raises OutputError ``binary_to_terminal``."""
    if fmt is None or fmt.lower() not in BINARY_FORMATS:
        return
    target = sys.stdout if stream is None else stream
    try:
        tty = bool(target.isatty())
    except (AttributeError, ValueError):
        tty = False
    if tty:
        from modelforge.errors import OutputError

        raise OutputError(
            f"refusing to write binary {fmt.lower()} output to a terminal",
            hint=f"redirect stdout (> predictions.{fmt.lower()}), pipe it, or pass -o FILE",
            code="binary_to_terminal",
        )


def table(*columns: str, title: str | None = None) -> Any:
    """A plain rich Table with our house style."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t
