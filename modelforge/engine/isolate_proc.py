"""Starting, stopping and reaping the child of :func:`modelforge.engine.isolate.run_isolated`:
a fork of this process, or a fresh interpreter that runs
:func:`modelforge.engine.isolate_child.spawned_main` (never the caller's ``__main__``)."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import IO, Any

from modelforge.engine import isolate_child
from modelforge.errors import ChildStartError

_SPAWN_CODE = "import sys; from modelforge.engine.isolate_child import spawned_main; " + (
    "spawned_main(int(sys.argv[1]), int(sys.argv[2]))"
)


class Child:
    """A running child: ``fd`` is the read end of its frame pipe."""

    def __init__(
        self,
        fd: int,
        pid: int,
        proc: subprocess.Popen[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        self.fd = fd
        self.pid = pid
        self._proc = proc
        self._stderr = stderr
        self._status: int | None = None

    def kill(self) -> None:
        if self._status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()

    def wait(self) -> int:
        """Reap the child: its exit status, or minus the signal that ended it."""
        if self._status is None:
            if self._proc is not None:
                self._status = self._proc.wait()
            else:
                _, raw = os.waitpid(self.pid, 0)
                self._status = os.waitstatus_to_exitcode(raw)
        return self._status

    def stderr_tail(self) -> str:
        """The last line the child wrote to stderr (silenced spawn children only)."""
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read()[-4000:].decode("utf-8", "replace")
                     .splitlines() if ln.strip()]  # fmt: skip
            return lines[-1].strip()[:300] if lines else ""
        return ""


def start_child(
    fn: Callable[..., Any], args: tuple[Any, ...], method: str, memory_mb: int | None, silence: bool
) -> Child:
    if method == "fork":
        return _fork(fn, args, memory_mb, silence)
    return _spawn(fn, args, memory_mb, silence)


def _fork(
    fn: Callable[..., Any], args: tuple[Any, ...], memory_mb: int | None, silence: bool
) -> Child:
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(r)
        os.close(w)
        raise ChildStartError(f"fork failed: {exc.strerror or exc}") from None
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            os.close(r)
            isolate_child.child_main(w, fn, args, memory_mb, silence)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return Child(r, pid)


def _job_bytes(fn: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    if getattr(fn, "__module__", None) == "__main__":
        raise ChildStartError(
            f"{getattr(fn, '__qualname__', fn)!s} is defined in __main__, which a fresh "
            "interpreter does not run; define it in an importable module"
        )
    try:
        return pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ChildStartError(
            f"the work cannot be sent to a fresh interpreter ({exc}); pass a module-level "
            "function and picklable arguments"
        ) from None


def _spawn(
    fn: Callable[..., Any], args: tuple[Any, ...], memory_mb: int | None, silence: bool
) -> Child:
    job = _job_bytes(fn, args)
    spec = pickle.dumps(
        {"sys_path": list(sys.path), "job": job, "memory_mb": memory_mb, "silence": silence}
    )
    if not sys.executable:
        raise ChildStartError("sys.executable is empty: no Python interpreter to start")
    spec_r, spec_w = os.pipe()
    frame_r, frame_w = os.pipe()
    err: IO[bytes] | None = tempfile.TemporaryFile() if silence else None  # noqa: SIM115
    std: Any = subprocess.DEVNULL if silence else None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SPAWN_CODE, str(spec_r), str(frame_w)],
            pass_fds=(spec_r, frame_w),
            stdin=std,
            stdout=std,
            stderr=err,
            close_fds=True,
        )
    except OSError as exc:
        for fd in (spec_r, spec_w, frame_r, frame_w):
            os.close(fd)
        raise ChildStartError(f"cannot run {sys.executable}: {exc.strerror or exc}") from None
    os.close(spec_r)
    os.close(frame_w)
    try:
        with os.fdopen(spec_w, "wb") as fh:
            fh.write(spec)
    except BrokenPipeError:
        pass  # the child died at once: its exit status and stderr tell why
    return Child(frame_r, proc.pid, proc, err)
