"""Run the whole predict pipeline in a forked child so that a crash in onnx/onnxruntime
(segfault, abort) on an untrusted model or input cannot take the CLI down with it.

Unlike :func:`modelforge.engine.sandbox.run_guarded`, the child keeps the real stdout and
stderr (predictions stream to stdout, warnings and progress to stderr) and runs without a
timeout or memory cap (a large file legitimately takes long). The child reports its result
as JSON over a pipe; the parent turns a signal death into ResourceLimitError and removes
the temp output file, which the parent named before forking.

Forking happens before any heavy import in the CLI, so it costs a few milliseconds
(measured: see docs/performance.md). It is used only when stdout is a real file descriptor
(not under test runners that capture sys.stdout in memory); set
``MODELFORGE_PREDICT_IN_PROCESS=1`` to run in process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelforge import errors
from modelforge.engine.sandbox import CRASH_SIGNALS
from modelforge.errors import ChildProcessBug, ModelForgeError, ResourceLimitError


def can_fork() -> bool:
    if os.environ.get("MODELFORGE_PREDICT_IN_PROCESS") == "1" or not hasattr(os, "fork"):
        return False
    try:
        sys.stdout.fileno()
        sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    return True


def _child(fn: Callable[[], dict[str, Any]], w: int) -> None:
    try:
        payload: dict[str, Any] = {"result": fn()}
    except ModelForgeError as err:
        payload = {"error": {"class": type(err).__name__, **err.to_dict()}}
    except BrokenPipeError:
        payload = {"broken_pipe": True}
    except KeyboardInterrupt:
        payload = {"interrupted": True}
    except BaseException as exc:  # a bug: the parent reports it with the traceback
        payload = {"bug": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        payload.setdefault("broken_pipe", True)
    data = json.dumps(payload, default=str).encode()
    with os.fdopen(w, "wb") as fh:
        fh.write(data)


def run_forked(
    fn: Callable[[], dict[str, Any]], *, cleanup: list[Path], what: str = "predict"
) -> dict[str, Any]:
    """Run ``fn`` (returning a JSON-able dict) in a forked child; return its result.

    ``what`` names the job in messages ("predict", "bench").
    """
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            _child(fn, w)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        with os.fdopen(r, "rb") as fh:
            while True:
                chunk = fh.read(65536)
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
        raise ResourceLimitError(
            f"{what} stopped: onnxruntime or onnx died with {name}",
            hint="the model or its input may be malformed; run 'modelforge validate MODEL'",
            code="memory_limit" if sig == signal.SIGKILL else "crashed",
        )
    try:
        payload = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        payload = {}
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
