"""Run the whole predict pipeline in a forked child so that a crash in onnx/onnxruntime
(segfault, abort) on an untrusted model or input cannot take the CLI down with it.

Unlike :func:`modelforge.engine.sandbox.run_guarded`, the child keeps the real stdout and
stderr (predictions stream to stdout, warnings and progress to stderr). Like it, the child
runs under an address-space cap (``RLIMIT_AS``; ``--memory-limit MB`` or
``MODELFORGE_MEMORY_MB``, default ``min(8192 MiB, 75% of RAM)``, ``0`` = none): a hostile
model that asks for absurd allocations fails with ResourceLimitError ``memory_limit``
(exit 8) instead of swapping the machine to a halt. There is no timeout unless the caller
passes one (``--timeout S``): a large file legitimately runs long, and
``MODELFORGE_TIMEOUT`` (validate's per-check limit) does not apply. The child reports its
result as JSON over a pipe; the parent turns a signal death into ResourceLimitError and
removes the temp output file, which the parent named before forking.

Forking happens before any heavy import in the CLI, so it costs a few milliseconds
(measured: see docs/performance.md). It is used only when stdout is a real file descriptor
(not under test runners that capture sys.stdout in memory); set
``MODELFORGE_PREDICT_IN_PROCESS=1`` to run in process.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelforge import errors
from modelforge.engine.sandbox import (
    CRASH_SIGNALS,
    ENV_MEMORY,
    Limits,
    _apply_memory_cap,
    is_allocation_failure,
    resolve_limits,
)
from modelforge.errors import ChildProcessBug, ModelForgeError, ResourceLimitError, UsageError


def can_fork() -> bool:
    if os.environ.get("MODELFORGE_PREDICT_IN_PROCESS") == "1" or not hasattr(os, "fork"):
        return False
    try:
        sys.stdout.fileno()
        sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    return True


MIN_MEMORY_MB = 4096


def forked_limits(memory_mb: int | None = None, timeout_s: float | None = None) -> Limits:
    """The limits of a forked predict/bench child: the memory cap as validate's (explicit >
    ``MODELFORGE_MEMORY_MB`` > default; 0 = none); a timeout only when one is passed.

    The cap is at least ``MIN_MEMORY_MB``: onnxruntime, polars and pyarrow reserve address
    space for their thread pools and allocators (measured on 2 cores: 1.3 GiB peak for a
    CSV run, 2.6 GiB with Parquet); below about 1.5 GiB polars' allocator can fail to start
    its threads and hang, and near the peak it aborts on a failed allocation.
    ``--memory-limit`` below that is refused; a smaller ``MODELFORGE_MEMORY_MB`` (meant for
    validate) is raised to it."""
    if memory_mb is not None and (memory_mb < 0 or 0 < memory_mb < MIN_MEMORY_MB):
        raise UsageError(
            f"--memory-limit {memory_mb} is too small: predict and bench need at least "
            f"{MIN_MEMORY_MB} MiB of address space",
            hint=f"pass --memory-limit {MIN_MEMORY_MB} or more, or 0 for no limit",
            code="invalid_option",
        )
    if timeout_s is not None and timeout_s < 0:
        raise UsageError(
            "--timeout must be 0 (none) or a number of seconds",
            hint="e.g. --timeout 600",
            code="invalid_option",
        )
    limits = resolve_limits(timeout_s=timeout_s or 0, memory_mb=memory_mb)
    if limits.memory_mb is not None and limits.memory_mb < MIN_MEMORY_MB:
        limits = Limits(timeout_s=limits.timeout_s, memory_mb=MIN_MEMORY_MB)
    return limits


def memory_error(what: str, limits: Limits) -> ResourceLimitError:
    cap = f"{limits.memory_mb} MiB" if limits.memory_mb else "the available memory"
    return ResourceLimitError(
        f"{what} ran out of memory (limit {cap})",
        hint=f"raise the cap with --memory-limit MB or {ENV_MEMORY}=MB (0 = none) if the "
        "model and data legitimately need it; a smaller --batch-size also lowers the peak",
        code="memory_limit",
        details={"limits": limits.to_dict()},
    )


def _child(fn: Callable[[], dict[str, Any]], w: int, memory_mb: int | None = None) -> None:
    try:
        _apply_memory_cap(memory_mb)
        payload: dict[str, Any] = {"result": fn()}
    except ModelForgeError as err:
        payload = {"error": {"class": type(err).__name__, **err.to_dict()}}
    except BrokenPipeError:
        payload = {"broken_pipe": True}
    except KeyboardInterrupt:
        payload = {"interrupted": True}
    except BaseException as exc:  # a bug: the parent reports it with the traceback
        if memory_mb is not None and (
            is_allocation_failure(exc) or "failed to map segment" in str(exc)
        ):
            payload = {"memory": True}
        else:
            payload = {"bug": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        payload.setdefault("broken_pipe", True)
    try:
        data = json.dumps(payload, default=str).encode()
    except MemoryError:
        data = b'{"memory": true}'
    with os.fdopen(w, "wb") as fh:
        fh.write(data)


def run_forked(
    fn: Callable[[], dict[str, Any]],
    *,
    cleanup: list[Path],
    what: str = "predict",
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Run ``fn`` (returning a JSON-able dict) in a forked child; return its result.

    ``what`` names the job in messages ("predict", "bench"). ``limits``: see
    :func:`forked_limits` (the default: the memory cap, no timeout).
    """
    limits = limits or forked_limits()
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            _child(fn, w, limits.memory_mb)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = None if limits.timeout_s is None else time.monotonic() + limits.timeout_s
    try:
        with os.fdopen(r, "rb") as fh:
            while True:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([fh], [], [], left)[0]:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        _remove(cleanup)
                        raise ResourceLimitError(
                            f"{what} stopped after the --timeout of {limits.timeout_s:g} s",
                            hint="raise --timeout (0 = none) for large inputs or slow models",
                            code="timeout",
                            details={"limits": limits.to_dict()},
                        )
                chunk = os.read(fh.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    except KeyboardInterrupt:
        os.kill(pid, signal.SIGINT)
        os.waitpid(pid, 0)
        _remove(cleanup)
        raise
    if os.WIFSIGNALED(status):
        _remove(cleanup)
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            name = "SIGKILL (out of memory?)"
        else:
            name = CRASH_SIGNALS.get(sig) or f"signal {sig}"  # type: ignore[call-overload]
        hint = "the model or its input may be malformed; run 'modelforge validate MODEL'"
        if limits.memory_mb is not None and sig != signal.SIGKILL:
            # native libraries abort when an allocation fails under RLIMIT_AS
            hint += (
                f"; or the --memory-limit of {limits.memory_mb} MiB is too tight for this "
                "data: raise it (0 = none)"
            )
        raise ResourceLimitError(
            f"{what} stopped: onnxruntime or onnx died with {name}",
            hint=hint,
            code="memory_limit" if sig == signal.SIGKILL else "crashed",
            details={"limits": limits.to_dict()},
        )
    try:
        payload = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        payload = {}
    if payload.get("memory"):
        _remove(cleanup)
        raise memory_error(what, limits)
    if payload.get("broken_pipe"):
        _remove(cleanup)
        raise BrokenPipeError(32, "Broken pipe")
    if payload.get("interrupted"):
        _remove(cleanup)
        raise KeyboardInterrupt
    if "error" in payload:
        _remove(cleanup)
        raise errors.rebuild_error(payload["error"])
    if "result" not in payload:
        _remove(cleanup)
        raise ChildProcessBug(
            f"{what} failed: {payload.get('bug', 'the child process sent no result')}",
            str(payload.get("traceback", "")),
        )
    return dict(payload["result"])


def _remove(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass
