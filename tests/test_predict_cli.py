"""modelforge predict through the CLI (CliRunner) and as real processes (pipes, crashes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelforge.cli.app import app
from tests import builders
from tests import predict_builders as pb

runner = CliRunner()


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


@pytest.mark.timeout(30)
def test_forked_child_crash_becomes_resource_limit_error(tmp_path):
    from modelforge.engine.forked import run_forked
    from modelforge.errors import ResourceLimitError

    leftover = tmp_path / ".out.csv.tmp"

    def crash():
        import faulthandler

        faulthandler.disable()
        leftover.write_text("partial")
        os.kill(os.getpid(), signal.SIGSEGV)
        return {}

    with pytest.raises(ResourceLimitError) as info:
        run_forked(crash, cleanup=[leftover])
    assert info.value.code == "crashed" and "SIGSEGV" in info.value.message
    assert not leftover.exists()
    assert run_forked(lambda: {"rows": 3}, cleanup=[]) == {"rows": 3}


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
        "import sys, modelforge.cli.predict, modelforge.inference, modelforge.engine.forked\n"
        "print([m for m in ('onnx', 'onnxruntime', 'numpy', 'pandas', 'polars', 'pyarrow')"
        " if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == b"[]"
