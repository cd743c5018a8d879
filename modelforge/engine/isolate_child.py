"""The child side of :mod:`modelforge.engine.isolate`, and the frame format both sides use.

Frames are an 8-byte big-endian length followed by that many bytes of UTF-8 JSON, never
pickle: a child that a hostile model compromised cannot get code execution in the parent
by sending crafted bytes. (Pickle only travels parent -> child, to start a fresh
interpreter.) One frame per message:

* ``{"started": true}`` once the child runs: a child that ends before it never started;
* ``{"progress": X}`` from :func:`progress`, delivered to the parent's ``on_progress``;
* ``{"log": [LEVEL, "text"]}`` for each record of the ``modelforge`` logger: the parent
  logs it again, so a warning is shown once, by the parent's renderer;
* one final frame: ``{"result": X}``, ``{"error": {class, code, message, hint,
  details}}``, ``{"memory": true}``, ``{"bug": {type, message, traceback}}``,
  ``{"broken_pipe": true}`` or ``{"start_error": "text"}``.

This module is what a fresh interpreter runs (``python -c ...spawned_main(...)``): it
imports nothing of the caller's ``__main__``, only the module that defines the function.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

from modelforge.errors import ModelForgeError

HEADER = struct.Struct(">Q")
MAX_FRAME_BYTES = 256 * 1024 * 1024
LOGGER_NAME = "modelforge"
_ALLOC_MARKERS = ("bad_alloc", "failed to allocate memory", "cannot allocate memory")

_conn: int | None = None  # the frame pipe, in a child
_local: Callable[[Any], None] | None = None  # on_progress, when the work runs in process


def is_allocation_failure(exc: BaseException) -> bool:
    """True for MemoryError and for C++ allocation failures surfaced as exceptions."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in (*_ALLOC_MARKERS, "failed to map segment"))


def in_child() -> bool:
    """True inside an isolated child (nested isolation is pointless: run in place)."""
    return _conn is not None


def progress(message: Any) -> None:
    """Send an intermediate JSON-able message to the parent's ``on_progress``.

    Outside a child it goes straight to the ``on_progress`` of the in-process run, if any.
    """
    if _conn is not None:
        _send(_conn, {"progress": message})
    elif _local is not None:
        _local(message)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def encode(obj: Any) -> bytes:
    data = json.dumps(obj, default=_json_default).encode("utf-8")
    return HEADER.pack(len(data)) + data


def _send(fd: int, obj: Any) -> None:
    data = encode(obj)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Forward(logging.Handler):
    """Send the child's log records to the parent instead of printing them here."""

    def emit(self, record: logging.LogRecord) -> None:
        if _conn is not None:
            with contextlib.suppress(OSError, TypeError, ValueError):
                _send(_conn, {"log": [record.levelno, record.getMessage()]})


def _forward_logging() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):  # e.g. the CLI renderer's, inherited by fork
        logger.removeHandler(handler)
    logger.addHandler(_Forward(level=logging.DEBUG))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def _silence_stdio() -> None:
    """Send fds 1 and 2 to /dev/null: onnxruntime's own log lines never reach the user."""
    import faulthandler

    if faulthandler.is_enabled():  # it writes to its own copy of stderr
        faulthandler.disable()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)
    # Python-level streams may have been replaced (pytest, CliRunner): point them away too.
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def apply_memory_cap(memory_mb: int | None) -> None:
    if memory_mb is None:
        return
    import resource

    cap = memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...], memory_mb: int | None) -> bytes:
    try:
        apply_memory_cap(memory_mb)
        result = fn(*args)
        sys.stdout.flush()
        return encode({"result": result})
    except ModelForgeError as err:
        return encode({"error": {"class": type(err).__name__, **err.to_dict()}})
    except BrokenPipeError:
        return encode({"broken_pipe": True})
    except BaseException as exc:  # a bug, or an allocation failure: the parent decides
        if memory_mb is not None and is_allocation_failure(exc):
            return encode({"memory": True})
        try:
            return encode(
                {
                    "bug": {
                        "type": type(exc).__name__,
                        "message": str(exc)[:2000],
                        "traceback": traceback.format_exc()[-8000:],
                    }
                }
            )
        except MemoryError:
            return encode({"memory": True})


def child_main(
    fd: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    memory_mb: int | None,
    silence: bool,
) -> None:
    """Run ``fn(*args)`` and send the final frame; the caller then ``os._exit``s."""
    global _conn
    if silence:
        _silence_stdio()
    # Ctrl-C: the parent stops the child and cleans up; no traceback from here
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _conn = fd
    _forward_logging()
    _send(fd, {"started": True})
    data = _outcome(fn, args, memory_mb)
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def spawned_main(spec_fd: int, frame_fd: int) -> None:
    """Entry point of a fresh interpreter: read the pickled job, run it, exit."""
    code = 0
    try:
        import pickle

        with os.fdopen(spec_fd, "rb") as fh:
            raw = fh.read()
        try:
            spec = pickle.loads(raw)
            sys.path[:] = spec["sys_path"]
            fn, args = pickle.loads(spec["job"])
        except Exception as exc:
            _send(frame_fd, {"start_error": f"{type(exc).__name__}: {exc}"})
            return
        child_main(frame_fd, fn, args, spec["memory_mb"], spec["silence"])
    except BaseException:
        code = 1
    finally:
        os._exit(code)
