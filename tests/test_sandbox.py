"""The one child-process guard (engine/isolate.py): results, errors, crashes, timeouts,
memory caps, start failures, log forwarding; both start methods; library calls from real
scripts, heredocs and ``python -c`` without a ``__main__`` guard."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelforge.engine import isolate
from modelforge.engine.isolate import Limits, can_isolate, progress, run_isolated
from modelforge.errors import (
    ChildStartError,
    ExitCode,
    InternalError,
    InvalidModelError,
    ResourceLimitError,
    UsageError,
)

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["fork", "spawn"])
def method(request, monkeypatch):
    """Every behaviour holds for a forked child and for a fresh interpreter."""
    monkeypatch.setenv("MODELFORGE_SANDBOX_START", request.param)
    return request.param


def _returns_dict(a, b):
    import numpy as np

    return {"sum": a + b, "arr": np.arange(3, dtype=np.int64), "scalar": np.float32(1.5)}


def _segfault():
    ctypes.string_at(0)


def _abort():
    os.abort()


def _killed():
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


def _exit_hard(code):
    os._exit(code)


def _sleep(seconds):
    time.sleep(seconds)
    return "woke up"


def _allocate(mb):
    block = bytearray(mb * 1024 * 1024)
    return len(block) // (1024 * 1024)


def _raise_model_error():
    raise InvalidModelError("model 'x' is broken", hint="re-export it", code="broken_model")


def _raise_bug():
    raise KeyError("oops")


def _noisy():
    os.write(1, b"C-level stdout noise\n")
    os.write(2, b"C-level stderr noise\n")
    print("python stdout noise")
    return 1


def _with_progress():
    progress({"step": 1})
    progress({"step": 2})
    return "done"


def _progress_then_crash():
    progress("before")
    ctypes.string_at(0)


def _warns():
    logging.getLogger("modelforge").warning("column 'z' is unused")
    return "ok"


def _session_roundtrip(path):
    import numpy as np

    from modelforge.engine.session import create_session

    sess = create_session(path)
    out = sess.inner.run(None, {"x": np.ones((2, 4), dtype=np.float32)})
    return {"shape": list(out[0].shape), "providers": sess.providers_used}


def test_returns_json_result(method):
    assert run_isolated(_returns_dict, 2, 3, what="adding") == {
        "sum": 5,
        "arr": [0, 1, 2],
        "scalar": 1.5,
    }


def test_segfault_becomes_crashed_error(method):
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_segfault, what="parsing 'evil.onnx'")
    assert info.value.code == "crashed"
    assert "SIGSEGV" in info.value.message and "parsing 'evil.onnx'" in info.value.message
    assert info.value.exit_code == ExitCode.LIMIT


def test_abort_is_crashed_sigkill_is_memory_and_exit_is_crashed(method):
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_abort, what="running")
    assert info.value.code == "crashed" and "SIGABRT" in info.value.message
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_killed, what="running")
    assert info.value.code == "memory_limit"
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_exit_hard, 3, what="running")
    assert info.value.code == "crashed" and "exit status 3" in info.value.message


def test_timeout_kills_child_and_removes_cleanup_files(method, tmp_path):
    leftover = tmp_path / "partial.csv"
    leftover.write_text("half")
    start = time.monotonic()
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_sleep, 30, what="sleeping", limits=Limits(0.5, None), cleanup=[leftover])
    assert info.value.code == "timeout"
    assert "sleeping did not finish within 0.5 s" in info.value.message
    assert time.monotonic() - start < 20
    assert not leftover.exists()


def test_memory_cap(method):
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_allocate, 4000, what="allocating", limits=Limits(None, 1500))
    assert info.value.code == "memory_limit"
    assert "1500 MiB" in info.value.message
    assert run_isolated(_allocate, 50, what="allocating", limits=Limits(None, 1500)) == 50


def test_model_error_keeps_class_code_hint(method):
    with pytest.raises(InvalidModelError) as info:
        run_isolated(_raise_model_error, what="checking")
    err = info.value
    assert type(err) is InvalidModelError
    assert (err.code, err.message, err.hint) == (
        "broken_model",
        "model 'x' is broken",
        "re-export it",
    )


def test_unexpected_exception_is_an_internal_error_carrying_the_child_traceback(method):
    with pytest.raises(InternalError) as info:
        run_isolated(_raise_bug, what="checking")
    err = info.value
    assert err.exit_code == ExitCode.INTERNAL and err.code == "internal_error"
    assert err.message == "checking failed: KeyError: 'oops'"  # one line, no traceback
    assert "Traceback" not in str(err)
    assert "_raise_bug" in err.traceback and "KeyError" in err.traceback


def test_child_output_does_not_leak(method, capfd):
    assert run_isolated(_noisy, what="noise") == 1
    captured = capfd.readouterr()
    assert "noise" not in captured.out and "noise" not in captured.err


def test_progress_messages_reach_the_parent_and_survive_a_crash(method):
    seen: list = []
    assert run_isolated(_with_progress, what="steps", on_progress=seen.append) == "done"
    assert seen == [{"step": 1}, {"step": 2}]
    seen.clear()
    with pytest.raises(ResourceLimitError):
        run_isolated(_progress_then_crash, what="steps", on_progress=seen.append)
    assert seen == ["before"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.seen: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.process or 0, record.getMessage()))


def test_child_warnings_are_logged_once_in_the_parent(method):
    logger = logging.getLogger("modelforge")
    records = _Records()
    logger.addHandler(records)
    try:
        assert run_isolated(_warns, what="warning") == "ok"
    finally:
        logger.removeHandler(records)
    assert records.seen == [(os.getpid(), "column 'z' is unused")]  # once, by this process


def test_in_process_when_disabled_keeps_progress(monkeypatch):
    monkeypatch.setenv("MODELFORGE_ISOLATE", "0")
    assert not can_isolate()
    seen: list = []
    assert run_isolated(_with_progress, what="steps", on_progress=seen.append) == "done"
    assert seen == [{"step": 1}, {"step": 2}]
    with pytest.raises(KeyError):  # in process, a bug is the original exception
        run_isolated(_raise_bug, what="checking")


def test_inherit_needs_real_descriptors():
    # pytest captures sys.stdout in memory: a child's stdout would be lost, so run in process
    assert can_isolate("silence")
    assert can_isolate("inherit") == isolate._has_real_stdio()


def test_spawn_refuses_work_defined_in_main(monkeypatch):
    monkeypatch.setenv("MODELFORGE_SANDBOX_START", "spawn")

    def local():
        return 1

    with pytest.raises(ChildStartError) as info:
        run_isolated(local, what="local work")
    err = info.value
    assert err.code == "child_start_failed" and err.exit_code == ExitCode.LIMIT
    assert "local work could not start its child process" in err.message
    assert "hostile" not in str(err)


def test_spawn_child_that_cannot_start_is_reported_as_such(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELFORGE_SANDBOX_START", "spawn")
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'no modelforge here' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ChildStartError) as info:
        run_isolated(_returns_dict, 1, 2, what="validating 'm.onnx'")
    assert "exited with status 3 before running" in info.value.message
    assert "no modelforge here" in info.value.message
    assert "hostile" not in str(info.value)


def test_onnxruntime_session_works_under_default_cap(tmp_path):
    from tests.builders import linear, save

    path = save(linear(), tmp_path / "m.onnx")
    limits = Limits.for_checks()
    assert limits.memory_mb is not None and limits.memory_mb <= 8192
    out = run_isolated(_session_roundtrip, str(path), what="running")
    assert out == {"shape": [2, 1], "providers": ["CPUExecutionProvider"]}


def test_limits_from_options_and_environment(monkeypatch):
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "7")
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "0")
    limits = Limits.for_checks()
    assert limits.timeout_s == 7.0 and limits.memory_mb is None
    assert Limits.for_checks(3, 100).to_dict() == {"timeout_s": 3, "memory_mb": 100}
    assert Limits.for_jobs().to_dict() == {"timeout_s": None, "memory_mb": None}
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "100")
    assert Limits.for_jobs(timeout_s=5).to_dict() == {"timeout_s": 5, "memory_mb": 4096}
    with pytest.raises(UsageError, match="at least 4096"):
        Limits.for_jobs(100)
    with pytest.raises(UsageError, match="--timeout"):
        Limits.for_checks(timeout_s=-1)
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="MODELFORGE_TIMEOUT"):
        Limits.for_checks()


def test_unknown_start_method_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("MODELFORGE_SANDBOX_START", "telepathy")
    with pytest.raises(UsageError, match="MODELFORGE_SANDBOX_START"):
        run_isolated(_returns_dict, 1, 1, what="adding")


# ---- library calls from real scripts without a __main__ guard --------------------------------

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnxruntime
    import sklearn.linear_model
    from onnx import TensorProto, helper, numpy_helper
    import modelforge as mf

    folder = sys.argv[1] if len(sys.argv) > 1 else FOLDER
    w = numpy_helper.from_array(np.ones((4, 1), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder + "/m.onnx"
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    report = mf.validate_model(path)
    added = mf.add_model(path, "scripted")
    print(json.dumps({"ok": report.ok, "version": added.version}))
    """
)


def _run_script(how: str, folder: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELFORGE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MODELFORGE_SANDBOX_START", None)
    code = SCRIPT.replace("FOLDER", repr(str(folder)))
    if how == "file":
        script = folder / "script.py"
        script.write_text(code)
        cmd, stdin = [sys.executable, str(script), str(folder)], None
    elif how == "stdin":
        cmd, stdin = [sys.executable, "-"], code
    else:
        cmd, stdin = [sys.executable, "-c", code], None
    return subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=240, env=env, cwd=folder
    )


@pytest.mark.parametrize("how", ["file", "stdin", "dash_c"])
def test_library_calls_work_from_scripts_without_a_main_guard(how, tmp_path):
    """An ordinary script that imported sklearn/onnxruntime at top level calls
    mf.validate_model and mf.add_model: the child must not re-run the script."""
    home = tmp_path / "home"
    proc = _run_script(how, tmp_path, home)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last == '{"ok": true, "version": 1}'
    assert "bootstrapping" not in proc.stderr and "hostile" not in proc.stderr
    assert proc.stdout.count('"ok"') == 1  # the script ran once
