"""Running risky work (parsing, checking, running untrusted models) in a guarded child process.

``run_guarded(fn, *args, what=...)`` runs ``fn(*args)`` in a child process with

* a wall-clock timeout (``MODELFORGE_TIMEOUT`` seconds, default 120; ``0`` = none);
* an address-space cap, ``RLIMIT_AS`` (``MODELFORGE_MEMORY_MB``, default
  ``min(8192, 75% of RAM)`` MiB; ``0`` = none). onnxruntime reserves a lot of virtual
  address space (thread stacks, arenas), so the cap is generous on purpose;
* the child's C-level stdout and stderr sent to ``/dev/null``, so that onnxruntime's and
  onnx's own log lines never reach the user's terminal.

The child sends its result back as **JSON** over a pipe, never as a pickle: a child that a
hostile model managed to compromise cannot get code execution in the parent by sending
crafted bytes. ``fn`` must return JSON-able values (dicts, lists, str, numbers, bools, None;
numpy scalars and arrays are converted with ``tolist()``).

Outcomes in the parent:

* timeout -> :class:`ResourceLimitError` code ``timeout`` (the child is killed);
* the child died from SIGSEGV/SIGABRT/SIGBUS/SIGILL/SIGFPE -> code ``crashed``;
* MemoryError or an allocation failure (``bad_alloc``) in the child, or SIGKILL (the
  kernel's OOM killer) -> code ``memory_limit``;
* a :class:`ModelForgeError` raised in the child is raised again in the parent with the same
  class (looked up by name in :mod:`modelforge.errors`), code, message, hint and details;
* any other exception is a bug: a ``RuntimeError`` carrying the child's traceback.

Start method. When the parent has not loaded a library that runs native thread pools
(onnxruntime, polars, pyarrow, torch, tensorflow, scikit-learn), the child is forked: fast,
and ``fn`` needs no pickling; validate and convert never import those in the CLI parent.
Otherwise (a library caller, or the test suite) forking could deadlock the child on a pool
lock held at fork time, so the ``forkserver`` method is used: slower to start (the child
imports onnx/onnxruntime itself), and ``fn``/``args`` must be picklable (they travel parent
-> child, which is safe). ``MODELFORGE_SANDBOX_START=fork|forkserver|spawn`` overrides the
choice. A child that deadlocks anyway is still stopped by the timeout.

Inside the child, :func:`progress` sends intermediate JSON messages to the parent (the
``on_progress`` callback receives them); validate uses it to keep the checks that finished
before a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelforge import errors
from modelforge.errors import ModelForgeError, ResourceLimitError, UsageError
from modelforge.text import escape

ENV_TIMEOUT = "MODELFORGE_TIMEOUT"
ENV_MEMORY = "MODELFORGE_MEMORY_MB"
ENV_START = "MODELFORGE_SANDBOX_START"
DEFAULT_TIMEOUT_S = 120.0
MAX_DEFAULT_MEMORY_MB = 8192
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

CRASH_SIGNALS = {
    signal.SIGSEGV: "SIGSEGV (segmentation fault)",
    signal.SIGABRT: "SIGABRT (abort)",
    signal.SIGBUS: "SIGBUS (bus error)",
    signal.SIGILL: "SIGILL (illegal instruction)",
    signal.SIGFPE: "SIGFPE (arithmetic fault)",
}
_THREADED_MODULES = ("onnxruntime", "polars", "pyarrow", "torch", "tensorflow", "sklearn")
_ALLOC_MARKERS = ("bad_alloc", "failed to allocate memory", "cannot allocate memory")


@dataclass(frozen=True)
class Limits:
    """The limits a guarded run uses; ``None`` means no limit."""

    timeout_s: float | None
    memory_mb: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb}


def total_memory_mb() -> int | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return int(pages * size // (1024 * 1024)) if pages > 0 and size > 0 else None


def default_memory_mb() -> int:
    total = total_memory_mb()
    return MAX_DEFAULT_MEMORY_MB if total is None else min(MAX_DEFAULT_MEMORY_MB, total * 3 // 4)


def _env_number(name: str, kind: type) -> float | int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = kind(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(
            f"environment variable {name}='{escape(raw)}' is not a non-negative number",
            hint=f"set {name} to a number (0 disables the limit) or unset it",
            code="invalid_option",
        )
    return value


def resolve_limits(timeout_s: float | None = None, memory_mb: int | None = None) -> Limits:
    """Explicit values > environment > defaults. ``0`` (or less) disables a limit."""
    if timeout_s is None:
        env_t = _env_number(ENV_TIMEOUT, float)
        timeout_s = DEFAULT_TIMEOUT_S if env_t is None else float(env_t)
    if memory_mb is None:
        env_m = _env_number(ENV_MEMORY, int)
        memory_mb = default_memory_mb() if env_m is None else int(env_m)
    return Limits(
        timeout_s=timeout_s if timeout_s and timeout_s > 0 else None,
        memory_mb=memory_mb if memory_mb and memory_mb > 0 else None,
    )


def is_allocation_failure(exc: BaseException) -> bool:
    """True for MemoryError and for C++ allocation failures surfaced as exceptions."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _ALLOC_MARKERS)


# ---- child side ----------------------------------------------------------------------------

_child_conn: Any = None


def in_child() -> bool:
    return _child_conn is not None


def progress(message: Any) -> None:
    """Send an intermediate JSON message to the parent (no-op outside a guarded child)."""
    if _child_conn is not None:
        _child_conn.send_bytes(_encode({"progress": message}))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, default=_json_default).encode("utf-8")


def _silence_stdio() -> None:
    import faulthandler

    if faulthandler.is_enabled():  # it writes to its own copy of stderr: a crash must not leak
        faulthandler.disable()
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)
    # Python-level streams may have been replaced (pytest, CliRunner): point them away too.
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def _apply_memory_cap(memory_mb: int | None) -> None:
    if memory_mb is None:
        return
    import resource

    cap = memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _child_main(
    conn: Any, fn: Callable[..., Any], args: tuple[Any, ...], memory_mb: int | None
) -> None:
    global _child_conn
    _silence_stdio()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _child_conn = conn
    try:
        _apply_memory_cap(memory_mb)
        payload: dict[str, Any] = {"result": fn(*args)}
        data = _encode(payload)
    except ModelForgeError as err:
        data = _encode(
            {
                "error": {
                    "class": type(err).__name__,
                    "code": err.code,
                    "message": err.message,
                    "hint": err.hint,
                    "details": err.details,
                }
            }
        )
    except BaseException as exc:  # report everything; the parent decides
        if is_allocation_failure(exc):
            data = b'{"memory": true}'
        else:
            try:
                data = _encode(
                    {
                        "exception": {
                            "type": type(exc).__name__,
                            "message": str(exc)[:2000],
                            "traceback": traceback.format_exc()[-8000:],
                        }
                    }
                )
            except MemoryError:
                data = b'{"memory": true}'
    conn.send_bytes(data)
    conn.close()


# ---- parent side ---------------------------------------------------------------------------


def start_method() -> str:
    forced = os.environ.get(ENV_START, "").strip()
    if forced:
        if forced not in ("fork", "forkserver", "spawn"):
            raise UsageError(
                f"{ENV_START}='{escape(forced)}' is not fork, forkserver or spawn",
                code="invalid_option",
            )
        return forced
    # Forking a process whose native thread pools are running can deadlock the child (a
    # pool lock held at fork time is never released). The CLI forks before importing any of
    # these; a library caller who already has them loaded gets a clean forkserver child.
    if any(name in sys.modules for name in _THREADED_MODULES):
        return "forkserver"
    return "fork"


def _limit_error(code: str, message: str, hint: str, limits: Limits) -> ResourceLimitError:
    return ResourceLimitError(message, hint=hint, code=code, details={"limits": limits.to_dict()})


def _memory_error(what: str, limits: Limits) -> ResourceLimitError:
    cap = f"{limits.memory_mb} MiB" if limits.memory_mb else "the available memory"
    return _limit_error(
        "memory_limit",
        f"{what} ran out of memory (limit {cap})",
        f"raise the cap with --memory-limit MB or {ENV_MEMORY}=MB if the model is "
        "legitimately this large; otherwise the file asks for absurd allocations",
        limits,
    )


def run_guarded(
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    what: str,
    on_progress: Callable[[Any], None] | None = None,
) -> Any:
    """Run module-level ``fn(*args)`` in a guarded child; return its JSON-decoded result.

    ``what`` names the work in error messages ("validating 'model.onnx'"). ``timeout_s`` and
    ``memory_mb`` default to the environment / built-in defaults (see module docstring).
    """
    import multiprocessing

    limits = resolve_limits(timeout_s, memory_mb)
    ctx: Any = multiprocessing.get_context(start_method())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(writer, fn, args, limits.memory_mb), daemon=True)
    import time

    proc.start()
    writer.close()
    deadline = None if limits.timeout_s is None else time.monotonic() + limits.timeout_s
    final: dict[str, Any] | None = None
    try:
        while final is None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not reader.poll(remaining):
                raise _limit_error(
                    "timeout",
                    f"{what} did not finish within {limits.timeout_s:g} s and was stopped",
                    f"raise the limit with --timeout S or {ENV_TIMEOUT}=S if the model is "
                    "legitimately slow",
                    limits,
                )
            try:
                raw = reader.recv_bytes(MAX_MESSAGE_BYTES)
            except EOFError:
                break  # the child died without a final message
            except OSError as exc:
                if "bad message length" not in str(exc):
                    break
                raise _limit_error(
                    "result_too_large",
                    f"{what} produced a result over {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB",
                    "this is a bug in ModelForge; please report it",
                    limits,
                ) from None
            message = json.loads(raw)
            if isinstance(message, dict) and "progress" in message:
                if on_progress is not None:
                    on_progress(message["progress"])
                continue
            final = message if isinstance(message, dict) else {}
        proc.join(None if deadline is None else max(0.1, deadline - time.monotonic()))
    finally:
        reader.close()
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if final is None:
        code = proc.exitcode
        if code is not None and code < 0:
            sig = -code
            if sig == signal.SIGKILL:
                raise _memory_error(what, limits)  # the kernel's OOM killer
            name = CRASH_SIGNALS.get(sig) or f"signal {sig}"  # type: ignore[call-overload]
            raise _limit_error(
                "crashed",
                f"{what} crashed the child process with {name}",
                "the model file triggers a bug in onnx/onnxruntime; it is likely malformed "
                "or hostile — re-export it, or report it upstream",
                limits,
            )
        raise _limit_error(
            "crashed",
            f"{what} ended the child process unexpectedly (exit status {code})",
            "the model file triggers a bug in onnx/onnxruntime; re-export it",
            limits,
        )
    if "result" in final:
        return final["result"]
    if "error" in final and isinstance(final["error"], dict):
        raise errors.rebuild_error(final["error"])
    if final.get("memory"):
        raise _memory_error(what, limits)
    info = final.get("exception") or {}
    raise RuntimeError(
        f"{what} failed in the child process: {info.get('type')}: {info.get('message')}\n"
        f"child traceback:\n{info.get('traceback')}"
    )
