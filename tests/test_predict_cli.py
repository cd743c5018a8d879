"""modelforge predict through the CLI (CliRunner) and as real processes (pipes, crashes)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import UsageError
from tests import builders
from tests import predict_builders as pb

runner = CliRunner()
FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture
def lin(tmp_path):
    return str(builders.save(builders.linear(4, 1), tmp_path / "lin.onnx"))


@pytest.fixture
def csv(tmp_path):
    return str(pb.write_csv(tmp_path / "d.csv", {
        "id": ["=cmd|' /C calc'!A0", "b", "c"], "f0": [1.0, 2.0, 3.0], "f1": [0.5, 0.25, 1.0],
        "f2": [1.0, 1.0, 1.0], "f3": [0.0, 0.0, 2.0],
    }))  # fmt: skip


def test_stdout_csv_with_keep_and_formula_neutralised(lin, csv):
    res = runner.invoke(app, ["predict", lin, csv, "--keep", "id"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "id,y_0"
    assert lines[1].startswith("'=cmd|")
    assert "fed 4 columns by position" in res.stderr


def test_stdin_csv_and_json_summary(lin, csv, tmp_path):
    data = Path(csv).read_bytes()
    out = tmp_path / "o.csv"
    res = runner.invoke(
        app, ["predict", lin, "-", "--keep", "id", "-o", str(out), "--json"], input=data
    )
    assert res.exit_code == 0, res.stderr
    env = json.loads(res.stdout)
    assert env["status"] == "ok" and env["result"]["rows"] == 3
    assert env["result"]["providers_used"] == ["cpu"]
    assert env["warnings"] and out.read_text().startswith("id,y_0\n")


def test_json_without_output_is_refused(lin, csv):
    res = runner.invoke(app, ["predict", lin, csv, "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout)["error"]["code"] == "json_needs_output"


def test_explain_human_and_json(lin, csv):
    res = runner.invoke(
        app, ["predict", lin, csv, "--keep", "id", "--columns", "f3,f2,f1,f0", "--explain"]
    )
    assert res.exit_code == 0, res.stderr
    assert "input   x float32 [N, 4] <- f3, f2, f1, f0" in res.stdout
    assert "by --columns" in res.stdout
    res2 = runner.invoke(app, ["predict", lin, csv, "--keep", "id", "--explain", "--json"])
    env = json.loads(res2.stdout)
    assert env["result"]["feeds"][0]["source"] == "positional"


def test_data_error_exit_code_no_traceback_no_output(lin, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b;c;d\n1;2;3;4\n")
    out = tmp_path / "o.csv"
    res = runner.invoke(app, ["predict", lin, str(bad), "-o", str(out)])
    assert res.exit_code == 5
    assert "--delimiter ';'" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == "" and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unknown_provider_and_output(lin, csv):
    res = runner.invoke(app, ["predict", lin, csv, "--keep", "id", "--provider", "coreml"])
    assert res.exit_code == 7 and "cpu (CPUExecutionProvider)" in res.stderr
    res2 = runner.invoke(app, ["predict", lin, csv, "--keep", "id", "--outputs", "zz"])
    assert res2.exit_code == 2 and "outputs: y" in res2.stderr


def test_data_option_prints_json_record(lin):
    res = runner.invoke(app, ["predict", lin, "--data", '{"x": [[1, 2, 3, 4]]}'])
    assert res.exit_code == 0, res.stderr
    assert set(json.loads(res.stdout)) == {"y_0"}


def test_jsonl_errors_name_file_and_physical_line(lin, tmp_path):
    bad = tmp_path / "j3.jsonl"
    bad.write_text('{"f0":1,"f1":2,"f2":3,"f3":4}\n\n{"f0":1,"f1":2,"f2":"x","f3":4}\n')
    res = runner.invoke(app, ["predict", lin, str(bad), "--columns", ",".join(FEATURES)])
    assert res.exit_code == 5 and res.stdout == ""
    assert f"'{bad}' line 3, column 'f2'" in res.stderr and "Traceback" not in res.stderr
    ragged = tmp_path / "j2.jsonl"
    ragged.write_text('{"x":[1,2,3,4]}\n\n\n{"x":[1,2,3,4]}\n{"x":[1,2,3]}\n')
    res = runner.invoke(app, ["predict", lin, str(ragged)])
    assert res.exit_code == 5 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert f"'{ragged}' line 5, column 'x' holds a list of 3 values" in line
    assert "Hint: every row needs a list of the same length" in line


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelforge", *args]


@pytest.mark.timeout(60)
def test_pipe_to_head_ends_quietly(tmp_path, lin):
    x = np.random.default_rng(0).normal(size=(200_000, 4)).astype(np.float32)
    big = pb.write_csv(tmp_path / "big.csv", {f"f{i}": x[:, i] for i in range(4)})
    cmd = " ".join(_cli("-q", "predict", lin, str(big), "--batch-size", "1000"))
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {cmd} | head -n 3"], capture_output=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[0] == "y_0"
    assert proc.stderr == b""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("in_process", ["0", "1"])
def test_closed_stdout_is_an_output_error(tmp_path, lin, in_process):
    """``>&-``: Python starts with sys.stdout None; predict says so (exit 10), no bug report."""
    p = pb.features_csv(tmp_path)
    cmd = " ".join(_cli("predict", lin, str(p), "--columns", ",".join(FEATURES)))
    env = {**os.environ, "MODELFORGE_PREDICT_IN_PROCESS": in_process}
    proc = subprocess.run(["bash", "-c", f"{cmd} >&-"], capture_output=True, timeout=50, env=env)
    assert proc.returncode == 10, proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "stdout is closed" in lines[0] and "-o FILE" in lines[0]
    assert "internal error" not in lines[0]
    out = tmp_path / "o.csv"
    cmd_o = f"{cmd} -o {out} >&-"
    ok = subprocess.run(["bash", "-c", cmd_o], capture_output=True, timeout=50, env=env)
    assert ok.returncode == 0, ok.stderr
    assert out.read_text().splitlines()[0] == "y_0"


@pytest.mark.timeout(60)
def test_real_process_stdin_stdout_and_atomic_failure(tmp_path, lin):
    rows = "f0,f1,f2,f3\n" + "1,2,3,4\n" * 50_000 + "1,2,x,4\n"
    out = tmp_path / "o.parquet"
    proc = subprocess.run(
        _cli("predict", lin, "-o", str(out)), input=rows.encode(), capture_output=True, timeout=50
    )
    assert proc.returncode == 5
    assert b"line 50002, column 'f2'" in proc.stderr and b"Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lin.onnx"]
    ok = subprocess.run(
        _cli("predict", lin, "-", "--output-format", "jsonl"),
        input=b"f0,f1,f2,f3\n1,2,3,4\n",
        capture_output=True,
        timeout=50,
    )
    import onnxruntime as ort

    want = ort.InferenceSession(lin).run(None, {"x": np.array([[1, 2, 3, 4]], np.float32)})[0]
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["y_0"] == pytest.approx(float(want[0, 0]), rel=1e-6)


def _crash_after_writing(leftover):
    import faulthandler

    faulthandler.disable()
    leftover.write_text("partial")
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}


def _rows():
    return {"rows": 3}


@pytest.mark.timeout(30)
def test_isolated_child_crash_becomes_resource_limit_error(tmp_path):
    from modelforge.engine.isolate import Limits, run_isolated
    from modelforge.errors import ResourceLimitError

    leftover = tmp_path / ".out.csv.tmp"
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_crash_after_writing, leftover, what="predict", limits=Limits.for_jobs(),
                     stdio="inherit", cleanup=[leftover])  # fmt: skip
    assert info.value.code == "crashed" and "SIGSEGV" in info.value.message
    assert not leftover.exists()
    assert run_isolated(_rows, what="predict", stdio="inherit") == {"rows": 3}


@pytest.mark.timeout(60)
def test_stdin_rows_are_answered_as_they_arrive(lin):
    import select

    proc = subprocess.Popen(
        _cli("-q", "predict", lin, "--columns", "f0,f1,f2,f3"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"f0,f1,f2,f3\n1,2,3,4\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no prediction before the input ended"
        assert proc.stdout.readline() == b"y_0\n"
        assert proc.stdout.readline().strip()
        proc.stdin.write(b"5,6,7,8\n")
        proc.stdin.close()
        assert len(proc.stdout.read().splitlines()) == 1
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


@pytest.mark.timeout(60)
def test_predict_modules_import_nothing_heavy_before_the_fork():
    code = (
        "import sys, modelforge.cli.predict, modelforge.inference, modelforge.engine.isolate\n"
        "print([m for m in ('onnx', 'onnxruntime', 'numpy', 'pandas', 'polars', 'pyarrow')"
        " if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == b"[]"


# the guarded child: memory cap, timeout, limits; progress through the Renderer --------


def _huge_alloc_model(path: Path) -> Path:
    """Allocates rows x 100000 x 10000 float32 (12 GB for 3 rows) at run time."""
    ints = {"st": [0], "en": [1], "big": [100_000], "k": [10_000]}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "st", "en"], ["n"]),
        helper.make_node("Mul", ["n", "big"], ["m"]),
        helper.make_node("Concat", ["m", "k"], ["shp"], axis=0),
        helper.make_node("ConstantOfShape", ["shp"], ["z"]),
        helper.make_node("ReduceSum", ["z"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.timeout(90)
def test_forked_child_memory_cap_gives_memory_limit_exit_8(tmp_path):
    model = _huge_alloc_model(tmp_path / "huge.onnx")
    p = pb.features_csv(tmp_path)
    out = tmp_path / "o.csv"
    proc = subprocess.run(
        _cli("predict", str(model), str(p), "--columns", ",".join(FEATURES), "--json",
             "--memory-limit", "4096", "-o", str(out)),
        capture_output=True, timeout=80,
    )  # fmt: skip
    assert proc.returncode == 8, proc.stderr
    env = json.loads(proc.stdout)
    assert env["error"]["code"] == "memory_limit"
    assert "--memory-limit" in env["error"]["hint"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["d.csv", "huge.onnx"]


@pytest.mark.timeout(90)
def test_bounded_streaming_and_fixed_batch_work_under_the_default_cap(tmp_path):
    """A real process (forked child under the default RLIMIT_AS): 3 rows into a [2, 4]
    model, padded, written to stdout, equal to onnxruntime row by row."""
    import onnxruntime as ort

    model = builders.save(builders.linear(4, 1, batch=2), tmp_path / "b2.onnx")
    p = pb.features_csv(tmp_path)
    proc = subprocess.run(
        _cli("-v", "predict", str(model), str(p), "--columns", ",".join(FEATURES)),
        capture_output=True, timeout=80,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    want = [sess.run(None, {"x": np.repeat(x[i : i + 1], 2, axis=0)})[0][0, 0] for i in range(3)]
    got = np.array(proc.stdout.decode().split()[1:], dtype=np.float32)
    assert np.array_equal(got, np.array(want, np.float32))
    assert b"padded the last 1 row with 1 copy of row 3" in proc.stderr


def _slow_after_writing(leftover):
    import time

    leftover.write_text("partial")
    time.sleep(30)
    return {}


@pytest.mark.timeout(60)
def test_isolated_timeout_and_option_checks(tmp_path):
    import time

    from modelforge.engine.isolate import Limits, run_isolated
    from modelforge.errors import ResourceLimitError

    leftover = tmp_path / ".o.tmp"
    t0 = time.monotonic()
    with pytest.raises(ResourceLimitError) as info:
        run_isolated(_slow_after_writing, leftover, what="predict", stdio="inherit",
                     cleanup=[leftover], limits=Limits.for_jobs(0, 0.5))  # fmt: skip
    assert info.value.code == "timeout" and "0.5 s" in info.value.message
    assert time.monotonic() - t0 < 20 and not leftover.exists()
    with pytest.raises(UsageError, match="at least 4096"):
        Limits.for_jobs(100)
    with pytest.raises(UsageError):
        Limits.for_jobs(None, -1)
    assert Limits.for_jobs(0).memory_mb is None and Limits.for_jobs(0).timeout_s is None
    assert Limits.for_jobs(4096, 3).to_dict() == {"timeout_s": 3, "memory_mb": 4096}


def test_memory_env_applies_and_small_values_are_raised(monkeypatch):
    from modelforge.engine.isolate import MIN_MEMORY_MB, Limits

    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "5000")
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "5")
    assert Limits.for_jobs().to_dict() == {"timeout_s": None, "memory_mb": 5000}
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "512")
    assert Limits.for_jobs().memory_mb == MIN_MEMORY_MB
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "0")
    assert Limits.for_jobs().memory_mb is None


def test_cli_rejects_a_tiny_memory_limit(lin, tmp_path):
    p = pb.features_csv(tmp_path)
    res = runner.invoke(app, ["predict", str(lin), str(p), "--memory-limit", "10"])
    assert res.exit_code == 2 and "at least 4096" in res.stderr and res.stdout == ""
    res = runner.invoke(app, ["bench", str(lin), "--memory-limit", "10"])
    assert res.exit_code == 2 and "at least 4096" in res.stderr


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_renderer_progress_shows_on_terminals_only():
    from modelforge.render import Renderer

    quiet = _Tty()
    with Renderer("predict", stderr=quiet, quiet=True).progress("x") as bar:
        bar.update(completed=3)
    plain = io.StringIO()
    with Renderer("predict", stderr=plain).progress("x") as bar:
        bar.advance(2)
    assert quiet.getvalue() == "" and plain.getvalue() == ""


def test_predict_progress_uses_the_renderer(lin, tmp_path, monkeypatch):
    from contextlib import contextmanager

    from modelforge.render import Renderer

    seen: list[tuple] = []

    class _Bar:
        def advance(self, n=1):
            seen.append(("advance", n))

        def update(self, completed=None, total=None, **_kw):
            seen.append(("update", completed, total))

    @contextmanager
    def fake(self, description, *, total=None, unit="rows"):
        seen.append(("start", description, unit))
        yield _Bar()
        seen.append(("end",))

    monkeypatch.setattr(Renderer, "progress", fake)
    monkeypatch.setenv("MODELFORGE_PREDICT_IN_PROCESS", "1")
    p = pb.features_csv(tmp_path)
    res = runner.invoke(app, ["predict", str(lin), str(p), "--columns", ",".join(FEATURES),
                              "--batch-size", "1"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert seen[0] == ("start", "predicting", "rows") and seen[-1] == ("end",)
    assert ("update", 3, None) in seen  # 3 rows read from a CSV (total unknown)
    assert "rows/s" not in res.stdout
