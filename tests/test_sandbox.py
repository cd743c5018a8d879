"""The guarded child process: results, errors, crashes, timeouts and memory caps."""

from __future__ import annotations

import ctypes
import os
import time

import pytest

from modelforge.engine import sandbox
from modelforge.engine.sandbox import resolve_limits, run_guarded
from modelforge.errors import ExitCode, InvalidModelError, ResourceLimitError, UsageError

pytestmark = pytest.mark.timeout(60)


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
    sandbox.progress({"step": 1})
    sandbox.progress({"step": 2})
    return "done"


def _progress_then_crash():
    sandbox.progress("before")
    ctypes.string_at(0)


def _session_roundtrip(path):
    import numpy as np

    from modelforge.engine.session import create_session

    sess = create_session(path)
    out = sess.inner.run(None, {"x": np.ones((2, 4), dtype=np.float32)})
    return {"shape": list(out[0].shape), "providers": sess.providers_used}


def test_returns_json_result():
    assert run_guarded(_returns_dict, 2, 3, what="adding") == {
        "sum": 5,
        "arr": [0, 1, 2],
        "scalar": 1.5,
    }


def test_segfault_becomes_crashed_error():
    with pytest.raises(ResourceLimitError) as info:
        run_guarded(_segfault, what="parsing 'evil.onnx'")
    assert info.value.code == "crashed"
    assert "SIGSEGV" in info.value.message and "parsing 'evil.onnx'" in info.value.message
    assert info.value.exit_code == ExitCode.LIMIT


def test_abort_is_crashed_and_sigkill_is_memory():
    with pytest.raises(ResourceLimitError) as info:
        run_guarded(_abort, what="running")
    assert info.value.code == "crashed" and "SIGABRT" in info.value.message
    with pytest.raises(ResourceLimitError) as info:
        run_guarded(_killed, what="running")
    assert info.value.code == "memory_limit"


def test_timeout_kills_child():
    start = time.monotonic()
    with pytest.raises(ResourceLimitError) as info:
        run_guarded(_sleep, 30, timeout_s=0.5, what="sleeping")
    assert info.value.code == "timeout"
    assert "0.5 s" in info.value.message
    assert time.monotonic() - start < 10


def test_memory_cap():
    with pytest.raises(ResourceLimitError) as info:
        run_guarded(_allocate, 4000, memory_mb=1500, what="allocating")
    assert info.value.code == "memory_limit"
    assert "1500 MiB" in info.value.message


def test_under_the_cap_allocation_works():
    assert run_guarded(_allocate, 50, memory_mb=1500, what="allocating") == 50


def test_model_error_keeps_class_code_hint():
    with pytest.raises(InvalidModelError) as info:
        run_guarded(_raise_model_error, what="checking")
    err = info.value
    assert type(err) is InvalidModelError
    assert (err.code, err.message, err.hint) == (
        "broken_model",
        "model 'x' is broken",
        "re-export it",
    )


def test_unexpected_exception_is_a_bug_with_child_traceback():
    with pytest.raises(RuntimeError, match="KeyError") as info:
        run_guarded(_raise_bug, what="checking")
    assert "child traceback" in str(info.value)


def test_child_output_does_not_leak(capfd):
    assert run_guarded(_noisy, what="noise") == 1
    captured = capfd.readouterr()
    assert "noise" not in captured.out and "noise" not in captured.err


def test_progress_messages_reach_parent():
    seen = []
    assert run_guarded(_with_progress, what="steps", on_progress=seen.append) == "done"
    assert seen == [{"step": 1}, {"step": 2}]


def test_progress_survives_crash():
    seen = []
    with pytest.raises(ResourceLimitError):
        run_guarded(_progress_then_crash, what="steps", on_progress=seen.append)
    assert seen == ["before"]


def test_onnxruntime_session_works_under_default_cap(tmp_path):
    from tests.builders import linear, save

    path = save(linear(), tmp_path / "m.onnx")
    limits = resolve_limits()
    assert limits.memory_mb is not None and limits.memory_mb <= 8192
    out = run_guarded(_session_roundtrip, str(path), what="running")
    assert out == {"shape": [2, 1], "providers": ["CPUExecutionProvider"]}


def test_limits_from_environment(monkeypatch):
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "7")
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "0")
    limits = resolve_limits()
    assert limits.timeout_s == 7.0 and limits.memory_mb is None
    assert resolve_limits(timeout_s=3, memory_mb=100).to_dict() == {
        "timeout_s": 3,
        "memory_mb": 100,
    }
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="MODELFORGE_TIMEOUT"):
        resolve_limits()


def test_forced_spawn_start_method(monkeypatch):
    monkeypatch.setenv("MODELFORGE_SANDBOX_START", "spawn")
    assert run_guarded(_returns_dict, 1, 1, what="adding")["sum"] == 2
