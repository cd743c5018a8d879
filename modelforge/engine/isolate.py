"""The one child-process guard: run risky work (parsing, checking, running untrusted models)
in a child so that a crash, a hang or an absurd allocation cannot take the caller down.

``run_isolated(fn, *args, what=..., limits=..., stdio=..., cleanup=..., on_progress=...)``
runs ``fn(*args)`` in a child process under

* a wall-clock timeout (``limits.timeout_s``; the child is killed), and
* an address-space cap, ``RLIMIT_AS`` (``limits.memory_mb``).

``Limits.for_checks()`` are validate's, convert's and ``models add``'s limits (timeout
``MODELFORGE_TIMEOUT``, default 120 s; memory ``MODELFORGE_MEMORY_MB``, default
``min(8192, 75% of RAM)`` MiB; ``0`` = none). ``Limits.for_jobs()`` are predict's and
bench's: the same memory cap but at least ``MIN_MEMORY_MB``, and no timeout unless given.

``stdio="silence"`` sends the child's stdout and stderr to /dev/null (onnxruntime's own log
lines never reach the user); ``stdio="inherit"`` keeps them, for work that streams data to
stdout (predict). Either way the child's ``modelforge`` log records travel to the parent
and are logged there once, and :func:`progress` messages reach ``on_progress``. The child
answers in JSON frames (:mod:`modelforge.engine.isolate_child`), never pickle.

Start method: the child is forked when the caller has not loaded a library that runs
native thread pools (onnxruntime, polars, pyarrow, torch, tensorflow, scikit-learn): fast,
and ``fn`` may be a closure; the CLI forks before importing those. Otherwise forking could
deadlock the child on a pool lock held at fork time, so a fresh interpreter is started
(``python -c``) that imports only the module defining ``fn``: never the caller's
``__main__``, so scripts without a ``__main__`` guard, notebooks and ``python - <<EOF``
heredocs work. Then ``fn`` must be a module-level function of an importable module and
``args`` picklable (they travel parent -> child, which is safe).
``MODELFORGE_SANDBOX_START=fork|spawn`` overrides the choice; ``MODELFORGE_ISOLATE=0``
runs everything in process (no guard).

Outcomes (the one table, :data:`OUTCOMES`): ``timeout``, ``memory_limit`` (MemoryError,
``bad_alloc`` or SIGKILL, the kernel's OOM killer), ``crashed`` (a fatal signal or an
unexpected exit), ``result_too_large`` (exit 8, ResourceLimitError); a child that could
not start is ChildStartError ``child_start_failed`` (exit 8), never a verdict on the
file; a ModelForgeError in the child is raised again with the same class, code, message,
hint and details; any other exception is a bug: InternalError (exit 1) whose
``traceback`` is the child's, shown by the CLI only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modelforge import errors
from modelforge.engine import isolate_child
from modelforge.engine.isolate_child import (
    HEADER,
    MAX_FRAME_BYTES,
    in_child,
    is_allocation_failure,
    progress,
)
from modelforge.errors import ChildStartError, InternalError, ResourceLimitError, UsageError
from modelforge.text import escape

__all__ = [
    "Limits",
    "in_child",
    "is_allocation_failure",
    "progress",
    "run_isolated",
]

ENV_TIMEOUT = "MODELFORGE_TIMEOUT"
ENV_MEMORY = "MODELFORGE_MEMORY_MB"
ENV_START = "MODELFORGE_SANDBOX_START"
ENV_ISOLATE = "MODELFORGE_ISOLATE"
DEFAULT_TIMEOUT_S = 120.0
MAX_DEFAULT_MEMORY_MB = 8192
MAX_LIMIT = 10**9  # the largest timeout (s, ~31 years) or memory cap (MiB) accepted
MIN_MEMORY_MB = 4096  # predict/bench: onnxruntime + polars/pyarrow reserve ~1.3-2.6 GiB
CRASH_SIGNALS = {
    signal.SIGSEGV: "SIGSEGV (segmentation fault)",
    signal.SIGABRT: "SIGABRT (abort)",
    signal.SIGBUS: "SIGBUS (bus error)",
    signal.SIGILL: "SIGILL (illegal instruction)",
    signal.SIGFPE: "SIGFPE (arithmetic fault)",
}
_THREADED_MODULES = ("onnxruntime", "polars", "pyarrow", "torch", "tensorflow", "sklearn")

Stdio = Literal["silence", "inherit"]


# ---- limits --------------------------------------------------------------------------------


def total_memory_mb() -> int | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
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
    if not _in_range(value):
        raise UsageError(
            f"environment variable {name}='{escape(raw)}' is not a non-negative number",
            hint=f"set {name} to a number (0 disables the limit) or unset it",
            code="invalid_option",
        )
    return value


def _in_range(value: float) -> bool:
    """0 (no limit) up to MAX_LIMIT: NaN, infinity and 1e300 would only overflow later."""
    return 0 <= value <= MAX_LIMIT


def _check_option(timeout_s: float | None, memory_mb: int | None) -> None:
    if timeout_s is not None and not _in_range(timeout_s):
        raise UsageError(
            "--timeout must be 0 (none) or a number of seconds",
            hint="e.g. --timeout 600",
            code="invalid_option",
        )
    if memory_mb is not None and not _in_range(memory_mb):
        raise UsageError(
            "--memory-limit must be 0 (none) or a number of MiB",
            hint="e.g. --memory-limit 8192",
            code="invalid_option",
        )


@dataclass(frozen=True)
class Limits:
    """The limits of a guarded child; ``None`` means no limit."""

    timeout_s: float | None = None
    memory_mb: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb}

    @classmethod
    def for_checks(cls, timeout_s: float | None = None, memory_mb: int | None = None) -> Limits:
        """validate / convert / models add: explicit > environment > defaults; 0 = none."""
        _check_option(timeout_s, memory_mb)
        if timeout_s is None:
            env_t = _env_number(ENV_TIMEOUT, float)
            timeout_s = DEFAULT_TIMEOUT_S if env_t is None else float(env_t)
        if memory_mb is None:
            env_m = _env_number(ENV_MEMORY, int)
            memory_mb = default_memory_mb() if env_m is None else int(env_m)
        return cls(timeout_s or None, memory_mb or None)

    @classmethod
    def for_jobs(cls, memory_mb: int | None = None, timeout_s: float | None = None) -> Limits:
        """predict / bench: the memory cap as for checks but at least ``MIN_MEMORY_MB``
        (onnxruntime, polars and pyarrow reserve address space for their thread pools;
        below ~1.5 GiB polars can hang starting them); a timeout only when one is given.
        An explicit cap below the minimum is refused; a smaller ``MODELFORGE_MEMORY_MB``
        (meant for validate) is raised to it."""
        if memory_mb is not None and 0 < memory_mb < MIN_MEMORY_MB:
            raise UsageError(
                f"--memory-limit {memory_mb} is too small: predict and bench need at least "
                f"{MIN_MEMORY_MB} MiB of address space",
                hint=f"pass --memory-limit {MIN_MEMORY_MB} or more, or 0 for no limit",
                code="invalid_option",
            )
        limits = cls.for_checks(timeout_s=timeout_s or 0, memory_mb=memory_mb)
        if limits.memory_mb is not None and limits.memory_mb < MIN_MEMORY_MB:
            limits = cls(limits.timeout_s, MIN_MEMORY_MB)
        return limits


# ---- outcomes ------------------------------------------------------------------------------

_LIMIT_HINTS = {
    "timeout": "raise the limit with --timeout S (0 = none; validate's checks also read "
    "{env_t}) if the work is legitimately slow",
    "memory_limit": "raise the cap with --memory-limit MB or {env_m}=MB (0 = none) if the "
    "model and data legitimately need it; otherwise the file asks for absurd allocations",
    "crashed": "the model or its input triggers a bug in onnx/onnxruntime; it is likely "
    "malformed or hostile: re-export it, or run 'modelforge validate MODEL'",
    "result_too_large": "this is a bug in ModelForge; please report it",
}
OUTCOMES: dict[str, str] = {
    "timeout": "{what} did not finish within {timeout:g} s and was stopped",
    "memory_limit": "{what} ran out of memory (limit {cap})",
    "crashed": "{what} crashed the child process with {signal}",
    "ended": "{what} ended the child process unexpectedly (exit status {status})",
    "result_too_large": "{what} produced a result over {max_mb} MiB",
    "child_start_failed": "{what} could not start its child process: {reason}",
    "bug": "{what} failed: {reason}",
}


def outcome_error(kind: str, what: str, limits: Limits, **info: Any) -> errors.ModelForgeError:
    """The error for one outcome of :data:`OUTCOMES` (the only place messages are made)."""
    fields = {
        "what": what,
        "timeout": limits.timeout_s or 0,
        "cap": f"{limits.memory_mb} MiB" if limits.memory_mb else "the available memory",
        "max_mb": MAX_FRAME_BYTES // (1024 * 1024),
        "signal": "",
        "status": "",
        "reason": "",
        **info,
    }
    message = OUTCOMES[kind].format(**fields)
    details = {"limits": limits.to_dict()}
    if kind == "child_start_failed":
        return ChildStartError(
            message,
            hint="this says nothing about the model: fix the cause above (the Python "
            f"environment of '{escape(sys.executable)}', or the caller), or choose how the "
            f"child starts with {ENV_START}=fork|spawn",
            details=details,
        )
    if kind == "bug":
        bug = InternalError(
            message,
            hint="this is a bug in ModelForge; rerun with --debug for the traceback and report it",
        )
        bug.traceback = str(info.get("traceback") or "")
        return bug
    code = "crashed" if kind == "ended" else kind
    hint = _LIMIT_HINTS[code].format(env_t=ENV_TIMEOUT, env_m=ENV_MEMORY)
    return ResourceLimitError(message, hint=hint, code=code, details=details)


# ---- parent side ---------------------------------------------------------------------------


def start_method() -> str:
    forced = os.environ.get(ENV_START, "").strip()
    if forced:
        if forced not in ("fork", "forkserver", "spawn"):
            raise UsageError(
                f"{ENV_START}='{escape(forced)}' is not fork or spawn", code="invalid_option"
            )
        return "fork" if forced == "fork" else "spawn"
    if not hasattr(os, "fork") or any(name in sys.modules for name in _THREADED_MODULES):
        return "spawn"
    return "fork"


def _has_real_stdio() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    return True


def can_isolate(stdio: Stdio = "silence") -> bool:
    """Whether :func:`run_isolated` will use a child here (else it runs ``fn`` in process):
    not with ``MODELFORGE_ISOLATE=0``, not nested in a child, and for ``inherit`` only
    when stdout and stderr are real file descriptors (not a test runner's buffers)."""
    if os.environ.get(ENV_ISOLATE) == "0" or in_child():
        return False
    if stdio == "inherit" and os.environ.get("MODELFORGE_PREDICT_IN_PROCESS") == "1":
        return False
    return stdio == "silence" or _has_real_stdio()


def run_isolated(
    fn: Callable[..., Any],
    *args: Any,
    what: str,
    limits: Limits | None = None,
    stdio: Stdio = "silence",
    cleanup: Sequence[str | os.PathLike[str]] = (),
    on_progress: Callable[[Any], None] | None = None,
) -> Any:
    """Run ``fn(*args)`` in a guarded child and return its JSON-decoded result.

    ``what`` names the work in messages ("validating 'model.onnx'", "predict").
    ``limits`` default to :meth:`Limits.for_checks`. ``cleanup`` files are removed when
    the child fails. When :func:`can_isolate` is false, ``fn`` runs in this process
    (``progress`` messages still reach ``on_progress``) and its result is returned as is.
    """
    limits = limits or Limits.for_checks()
    if not can_isolate(stdio):
        return _in_process(fn, args, on_progress)
    from modelforge.engine.isolate_proc import start_child

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
    try:
        child = start_child(fn, args, start_method(), limits.memory_mb, stdio == "silence")
    except ChildStartError as err:
        raise outcome_error("child_start_failed", what, limits, reason=err.message) from None
    started: list[bool] = []
    try:
        final = _read_frames(child.fd, limits, what, on_progress, started)
    except BaseException:
        child.kill()
        _remove(cleanup)
        raise
    finally:
        os.close(child.fd)
    status = child.wait()
    try:
        if final is None and not started and status >= 0:
            reason = f"it exited with status {status} before running"
            if child.stderr_tail():
                reason += f": {child.stderr_tail()}"
            raise outcome_error("child_start_failed", what, limits, reason=escape(reason))
        return _final_result(final, status, what, limits, child.stderr_tail())
    except BaseException:
        _remove(cleanup)
        raise


def _in_process(
    fn: Callable[..., Any], args: tuple[Any, ...], on_progress: Callable[[Any], None] | None
) -> Any:
    previous, isolate_child._local = isolate_child._local, on_progress
    try:
        return fn(*args)
    finally:
        isolate_child._local = previous


def _read_frames(
    fd: int,
    limits: Limits,
    what: str,
    on_progress: Callable[[Any], None] | None,
    started: list[bool],
) -> dict[str, Any] | None:
    """Deliver progress and log frames; return the final frame (None: the child ended)."""
    import json

    deadline = None if limits.timeout_s is None else time.monotonic() + limits.timeout_s
    buf = bytearray()
    logger = logging.getLogger(isolate_child.LOGGER_NAME)
    while True:
        while len(buf) < HEADER.size or len(buf) < HEADER.size + HEADER.unpack_from(buf)[0]:
            if len(buf) >= HEADER.size and HEADER.unpack_from(buf)[0] > MAX_FRAME_BYTES:
                raise outcome_error("result_too_large", what, limits)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise outcome_error("timeout", what, limits)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            buf += chunk
        size = HEADER.unpack_from(buf)[0]
        try:
            message = json.loads(bytes(buf[HEADER.size : HEADER.size + size]))
        except ValueError:
            message = {}
        del buf[: HEADER.size + size]
        if not isinstance(message, dict):
            continue
        if "progress" in message:
            if on_progress is not None:
                on_progress(message["progress"])
        elif "log" in message:
            level, text = message["log"]
            logger.log(int(level), "%s", text)
        elif "started" in message:
            started.append(True)
        else:
            return message


def _final_result(
    final: dict[str, Any] | None, status: int, what: str, limits: Limits, stderr_tail: str
) -> Any:
    if final is None:
        if status < 0:
            sig = -status
            if sig == signal.SIGKILL:  # the kernel's OOM killer, as a rule
                raise outcome_error("memory_limit", what, limits)
            if sig == signal.SIGINT:
                raise KeyboardInterrupt
            name = CRASH_SIGNALS.get(sig) or f"signal {sig}"  # type: ignore[call-overload]
            raise outcome_error("crashed", what, limits, signal=name)
        raise outcome_error("ended", what, limits, status=status)
    if "result" in final:
        return final["result"]
    if isinstance(final.get("error"), dict):
        raise errors.rebuild_error(final["error"])
    if final.get("memory"):
        raise outcome_error("memory_limit", what, limits)
    if final.get("broken_pipe"):
        raise BrokenPipeError(32, "Broken pipe")
    if "start_error" in final:
        reason = str(final["start_error"])
        if stderr_tail:
            reason += f" ({stderr_tail})"
        raise outcome_error("child_start_failed", what, limits, reason=escape(reason))
    raw_bug = final.get("bug")
    bug: dict[str, Any] = raw_bug if isinstance(raw_bug, dict) else {}
    raise outcome_error(
        "bug",
        what,
        limits,
        reason=f"{bug.get('type')}: {escape(bug.get('message'))}".replace("\\n", " "),
        traceback=bug.get("traceback"),
    )


def _remove(paths: Sequence[str | os.PathLike[str]]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)
