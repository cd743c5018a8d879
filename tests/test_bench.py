"""bench: JSON structure, ordering of percentiles, compare ratios, inputs, errors.

No timing assertions: only structure, ordering and consistency of what was measured.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from modelforge.bench import BenchOptions, run_bench
from modelforge.bench.stats import (
    SPREAD_LIMIT,
    RoundStats,
    histogram,
    latency_stats,
    percentile,
)
from modelforge.cli.app import app
from modelforge.cli.bench import bar, fmt_ms, histogram_lines
from modelforge.render import dumps
from tests.builders import add_two, identity, linear, save

runner = CliRunner()
FAST = ["--runs", "3", "--warmup", "1"]


def bench_json(*args: str) -> dict:
    result = runner.invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["command"] == "bench" and doc["error"] is None
    return doc


def _ordered(lat: dict) -> None:
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert lat["min"] > 0


def _rounds_ok(rs: dict, rounds: int) -> None:
    assert len(rs["rounds"]) == rounds
    assert rs["min"] <= rs["median"] <= rs["max"]
    assert rs["min"] == min(rs["rounds"]) and rs["max"] == max(rs["rounds"])
    assert rs["trustworthy"] in (True, False, None)
    if rounds >= 3 and abs(rs["spread"] - SPREAD_LIMIT) > 1e-3:  # spread is rounded in JSON
        assert rs["trustworthy"] == (rs["spread"] <= SPREAD_LIMIT)


def test_symbolic_batch_json_structure(tmp_path):
    model = save(linear(n_features=4), tmp_path / "lin.onnx")
    doc = bench_json(str(model), *FAST, "--batch-sizes", "1,8,64")
    res = doc["result"]
    assert set(res) == {
        "model", "compare", "settings", "environment", "results", "ratios", "untrustworthy",
        "seconds",
    }  # fmt: skip
    assert res["compare"] is None and res["ratios"] == []
    s = res["settings"]
    assert s["mode"] == "runs" and s["runs"] == 3 and s["rounds"] == 3 and s["warmup"] == 1
    assert s["batch_sizes"] == [1, 8, 64] and s["opt_level"] == "all" and s["threads"] is None
    env = res["environment"]
    assert env["onnxruntime"] == ort.__version__
    assert env["cpu_model"] and "CPUExecutionProvider" in env["available_providers"]
    assert res["model"]["batch_sizes"] == [1, 8, 64] and res["model"]["source"] == "synthesized"

    (r,) = res["results"]
    assert r["model"] == "model" and r["provider"] == "cpu" and r["providers_used"] == ["cpu"]
    for key in ("load", "session", "total"):
        _rounds_ok(r["cold_start_ms"][key], 3)
    total = r["cold_start_ms"]["total"]["rounds"]
    cold = r["cold_start_ms"]
    parts = zip(cold["load"]["rounds"], cold["session"]["rounds"], strict=True)
    assert all(math.isclose(t, a + b, rel_tol=1e-2) for t, (a, b) in zip(total, parts, strict=True))
    _rounds_ok(r["first_inference_ms"], 3)

    assert [b["batch_size"] for b in r["batches"]] == [1, 8, 64]
    for b in r["batches"]:
        assert b["rows_per_run"] == b["batch_size"]
        assert b["input_shapes"] == {"x": [b["batch_size"], 4]}
        assert b["latency_ms"]["count"] == 3
        _ordered(b["latency_ms"])
        _rounds_ok(b["median_latency_rounds_ms"], 3)
        _rounds_ok(b["throughput_rows_per_s"], 3)
        assert b["throughput_rows_per_s"]["median"] > 0
        h = b["histogram"]
        assert sum(h["counts"]) + h["overflow"] == 3
        assert len(h["edges_ms"]) == len(h["counts"]) + 1
        assert h["edges_ms"] == sorted(h["edges_ms"])


def test_fixed_batch_uses_its_size(tmp_path):
    model = save(linear(batch=4), tmp_path / "fixed.onnx")
    result = runner.invoke(app, ["bench", str(model), *FAST, "--batch-sizes", "1,8", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    (r,) = doc["result"]["results"]
    assert [b["batch_size"] for b in r["batches"]] == [4]
    assert r["batches"][0]["input_shapes"] == {"x": [4, 4]}
    assert doc["result"]["model"]["fixed_batch"] == 4
    assert any("fixes its batch dimension to 4" in w for w in doc["warnings"])
    assert "--batch-sizes is ignored" in result.stderr


def test_multi_input_and_other_symbolic_dims(tmp_path):
    doc = bench_json(str(save(add_two(), tmp_path / "add.onnx")), *FAST, "--batch-sizes", "2")
    (b,) = doc["result"]["results"][0]["batches"]
    assert b["input_shapes"] == {"a": [2, 3], "b": [2, 3]}
    seq = save(identity(shape=("N", "T")), tmp_path / "seq.onnx")
    doc = bench_json(str(seq), *FAST, "--batch-sizes", "2,3", "--dim", "T=5")
    shapes = [b["input_shapes"] for b in doc["result"]["results"][0]["batches"]]
    assert shapes == [{"x": [2, 5]}, {"x": [3, 5]}]
    assert doc["result"]["settings"]["dims"] == {"T": 5}


def test_compare_reports_ratios(tmp_path):
    a = save(linear(n_features=4, seed=0), tmp_path / "a.onnx")
    b = save(linear(n_features=4, seed=1), tmp_path / "b.onnx")
    doc = bench_json(str(a), "--compare", str(b), *FAST, "--batch-sizes", "1,8")
    res = doc["result"]
    assert res["compare"]["path"] == str(b)
    assert [(r["model"], r["provider"]) for r in res["results"]] == [
        ("model", "cpu"),
        ("compare", "cpu"),
    ]
    ratios = {(q["metric"], q["batch_size"]): q for q in res["ratios"]}
    expected = {("cold_start_ms", None), ("first_inference_ms", None)}
    for size in (1, 8):
        for metric in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                       "throughput_rows_per_s"):  # fmt: skip
            expected.add((metric, size))
    assert set(ratios) == expected
    by_model = {r["model"]: r for r in res["results"]}
    for (metric, size), q in ratios.items():
        assert q["provider"] == "cpu" and q["model"] > 0 and q["compare"] > 0 and q["ratio"] > 0
        if metric.startswith("latency_p9"):
            assert q["per_round"] is None
            key = metric.split("_")[1]
            pooled = by_model["model"]["batches"][[1, 8].index(size)]["latency_ms"][key]
            assert q["model"] == pytest.approx(pooled, rel=1e-3)
        else:
            _rounds_ok(q["per_round"], 3)
            assert q["ratio"] == pytest.approx(q["per_round"]["median"], rel=1e-3)


def test_compare_core_api_and_duration_mode(tmp_path):
    a = save(linear(), tmp_path / "a.onnx")
    rep = run_bench(
        str(a),
        BenchOptions(duration_s=0.03, rounds=3, warmup=0, batch_sizes=(2,), compare=str(a)),
    )
    assert rep.settings["mode"] == "duration" and rep.settings["duration_s"] == 0.03
    for r in rep.results:
        assert r.batches[0].latency_ms.count >= 3  # at least one run per round
    json.loads(dumps(rep))  # the whole report is JSON-serializable
    assert {q.metric for q in rep.ratios} >= {"latency_p50_ms", "throughput_rows_per_s"}


def test_data_file_feeds(tmp_path):
    model = save(linear(n_features=3), tmp_path / "lin.onnx")
    data = tmp_path / "rows.csv"
    data.write_text("a,b,c\n1,2,3\n4,5,6\n")
    result = runner.invoke(
        app,
        ["bench", str(model), *FAST, "--batch-sizes", "1,4", "--data", str(data),
         "--columns", "a,b,c", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    res = json.loads(result.stdout)["result"]
    assert res["model"]["source"] == "data" and res["model"]["data_rows"] == 2
    assert [b["input_shapes"] for b in res["results"][0]["batches"]] == [
        {"x": [1, 3]},
        {"x": [4, 3]},
    ]
    assert "repeated" in result.stderr


def test_human_output_table_and_chart(tmp_path):
    model = save(linear(), tmp_path / "lin.onnx")
    result = runner.invoke(app, ["bench", str(model), *FAST, "--batch-sizes", "1,8"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "cold start" in out and "steady state" in out and "p99" in out
    assert "latency distribution, cpu, batch 1 (3 runs)" in out
    assert "│" in out and "█" in out
    assert result.stderr == ""  # no progress line when stderr is not a terminal


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--runs", "0"], 2, "--runs must be 1 to 10,000,000, got 0"),
        (["--runs", "3", "--duration", "1"], 2, "cannot be combined"),
        (["--duration", "0"], 2, "--duration must be a positive"),
        (["--batch-sizes", "1,x"], 2, "--batch-sizes '1,x' must list positive integers"),
        (["--batch-sizes", "0"], 2, "must list positive integers"),
        (["--warmup", "-1"], 2, "--warmup must be 0 to 1,000,000, got -1"),
        (["--rounds", "0"], 2, "--rounds must be 1 to 1,000, got 0"),
        (["--opt-level", "fast"], 2, "unknown optimisation level 'fast'"),
        (["--threads", "-2"], 2, "--threads must be 0"),
        (["--provider", "nosuch"], 2, "unknown execution provider 'nosuch'"),
        (["--provider", "cuda"], 7, "not available in this onnxruntime build"),
        (["--provider-option", "novalue"], 2, "is not KEY=VALUE"),
        (["--dim", "N=4"], 2, "names the batch dimension"),
        (["--dim", "T"], 2, "is not NAME=VALUE"),
        (["--compare", "missing.onnx"], 3, "missing.onnx' does not exist"),
        (["--data", "missing.csv"], 3, "missing.csv' does not exist"),
    ],
)
def test_bad_options(tmp_path, monkeypatch, args, code, needle):
    if args == ["--provider", "cuda"] and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here, so the unavailable-provider error cannot occur")
    monkeypatch.chdir(tmp_path)
    model = save(linear(), tmp_path / "lin.onnx")
    run_args = ["--runs", "3"] if "--runs" not in args and "--duration" not in args else []
    result = runner.invoke(app, ["bench", str(model), *run_args, *args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""  # no partial output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in result.stderr
    js = runner.invoke(app, ["bench", str(model), *run_args, *args, "--json"])
    assert js.exit_code == code
    env = json.loads(js.stdout)
    assert env["status"] == "error" and env["result"] is None
    assert env["error"]["exit_code"] == code


def test_missing_model_and_unsynthesizable_input(tmp_path):
    result = runner.invoke(app, ["bench", str(tmp_path / "nope.onnx"), "--runs", "1"])
    assert result.exit_code == 3 and result.stdout == ""
    assert "does not exist" in result.stderr
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        "seq",
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    seq = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    seq.ir_version = 8
    result = runner.invoke(app, ["bench", str(save(seq, tmp_path / "seq.onnx")), "--runs", "1"])
    assert result.exit_code == 5 and result.stdout == ""
    assert "input 's'" in result.stderr and "cannot be synthesized" in result.stderr


def test_scalar_inputs_run_one_row(tmp_path):
    doc = bench_json(str(save(identity(shape=()), tmp_path / "scalar.onnx")), *FAST)
    (b,) = doc["result"]["results"][0]["batches"]
    assert b["batch_size"] == 1 and b["input_shapes"] == {"x": []}


def test_stats_helpers():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    s = sorted(values)
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(s, q) == pytest.approx(float(np.percentile(values, q)))
    lat = latency_stats(values)
    assert (lat.min, lat.max, lat.count) == (1.0, 10.0, 6)
    assert lat.p50 == pytest.approx(3.5) and lat.mean == pytest.approx(25 / 6)
    steady = RoundStats((1.0, 1.05, 0.98))
    assert steady.trustworthy is True and steady.median == 1.0
    noisy = RoundStats((1.0, 1.5, 1.1))
    assert noisy.trustworthy is False and noisy.spread == pytest.approx(0.5 / 1.1)
    assert RoundStats((1.0, 2.0)).trustworthy is None  # too few rounds to judge
    many = [1.0] * 150 + [2.0] * 49 + [100.0]
    h = histogram(many, bins=4)
    assert sum(h.counts) + h.overflow == 200 and h.overflow >= 1
    assert h.edges[0] == 1.0 and h.counts[0] == 150


def test_chart_helpers():
    assert bar(0, 10) == "" and bar(10, 10, width=4) == "████"
    assert bar(1, 16, width=4) == "▎"  # 1/16 of 4 cells = 2 eighths
    lines = histogram_lines({"edges_ms": [0.001, 0.002, 0.003], "counts": [4, 2], "overflow": 1})
    assert len(lines) == 3 and lines[2].strip().startswith("> 3 µs")
    assert fmt_ms(0.0123) == "12.3 µs" and fmt_ms(12.34) == "12.3 ms" and fmt_ms(2500) == "2.5 s"


@pytest.mark.timeout(60)
def test_cli_module_imports_nothing_heavy():
    code = (
        "import sys, modelforge.cli.bench, modelforge.bench; "
        "heavy = [m for m in ('onnx', 'onnxruntime', 'numpy', 'pandas', 'polars', 'pyarrow') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.timeout(90)
def test_cli_process_runs_in_forked_child(tmp_path):
    """As a real process (stdout a file descriptor) bench runs in predict's forked child:
    the envelope still carries the warnings, and a closed pipe is not an error."""
    model = save(linear(batch=4), tmp_path / "fixed.onnx")
    cmd = [sys.executable, "-m", "modelforge", "bench", str(model), "--runs", "3",
           "--warmup", "0", "--batch-sizes", "1"]  # fmt: skip
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok" and doc["result"]["results"][0]["batches"][0]["batch_size"] == 4
    assert any("fixes its batch dimension" in w for w in doc["warnings"])
    assert proc.stderr.count("fixes its batch dimension") == 1
    head = subprocess.run(
        f"{shlex.join(cmd)} | head -1", shell=True, capture_output=True, text=True,
        timeout=80, executable="/bin/bash",
    )  # fmt: skip
    assert head.stdout.startswith("model ") and "Traceback" not in head.stderr
    assert "error" not in head.stderr


def test_store_reference(tmp_path):
    model = save(linear(), tmp_path / "lin.onnx")
    added = runner.invoke(app, ["models", "add", str(model), "--name", "lin"])
    assert added.exit_code == 0, added.stderr
    doc = bench_json("lin", *FAST, "--batch-sizes", "2", "--compare", "lin:1")
    res = doc["result"]
    assert res["model"]["origin"] == "store" and res["model"]["display"] == "lin:1"
    assert res["compare"]["display"] == "lin:1" and res["ratios"]


# ---- the guarded child, messages and progress ------------------------------------------------


def test_map_naming_an_input_twice_is_refused_as_for_predict(tmp_path):
    model = save(linear(), tmp_path / "lin.onnx")
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,d\n1,2,3,4\n")
    result = runner.invoke(app, ["bench", str(model), *FAST, "--data", str(data),
                                 "--map", "x=a,b,c,d", "--map", "x=d,c,b,a"])  # fmt: skip
    assert result.exit_code == 2
    assert "--map names input 'x' twice" in result.stderr and result.stdout == ""


@pytest.mark.timeout(120)
def test_a_child_warning_is_printed_once_by_a_real_process(tmp_path):
    """The guarded child's warnings travel to the parent, which prints them once (issue:
    they were printed by the child and again by the renderer)."""
    model = save(linear(), tmp_path / "lin.onnx")
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,d\n1,2,3,4\n5,6,7,8\n")
    cmd = [sys.executable, "-m", "modelforge", "bench", str(model), "--runs", "3",
           "--warmup", "0", "--batch-sizes", "1", "--data", str(data)]  # fmt: skip
    human = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
    assert human.returncode == 0, human.stderr
    assert human.stderr.count("fed 4 columns by position") == 1, human.stderr
    doc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=100)
    assert doc.returncode == 0, doc.stderr
    warnings = json.loads(doc.stdout)["warnings"]
    assert sum("fed 4 columns by position" in w for w in warnings) == 1
    assert doc.stderr.count("fed 4 columns by position") == 1


def test_isolated_library_bench_returns_the_same_report_type(tmp_path):
    from modelforge.bench import BenchReport

    model = save(linear(), tmp_path / "lin.onnx")
    opts = BenchOptions(runs=3, warmup=0, rounds=2, batch_sizes=(1, 2))
    steps: list[tuple[str, int, int]] = []
    report = run_bench(str(model), opts, isolate=True, progress=lambda *s: steps.append(s))
    assert isinstance(report, BenchReport)
    assert [b.batch_size for b in report.results[0].batches] == [1, 2]
    assert report.results[0].batches[0].latency_ms.count == 3
    assert report.to_dict()["results"][0]["batches"][1]["input_shapes"] == {"x": [2, 4]}
    total = steps[0][2]
    assert total == 1 * (2 + 2) + 2 * 2  # prepare, 2 cold rounds, warm-up, 2 rounds x 2 sizes
    assert [s[1] for s in steps] == list(range(total))
    assert steps[0][0].startswith("preparing model") and steps[-1][0].startswith("round 2/2")


def _crash_session(*_args, **_kwargs):
    import ctypes

    ctypes.string_at(0)


def test_a_crash_in_the_isolated_bench_is_exit_8(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_SANDBOX_START", "fork")  # the patch must reach the child
    monkeypatch.setattr("modelforge.bench.core._run_once", _crash_session)
    model = save(linear(), tmp_path / "lin.onnx")
    result = runner.invoke(app, ["bench", str(model), *FAST, "--batch-sizes", "1"])
    assert result.exit_code == 8
    assert result.stderr.startswith("error: bench crashed the child process with SIGSEGV")
    assert result.stdout == ""


def test_progress_is_shown_on_a_terminal_and_cleared(tmp_path, monkeypatch):
    from modelforge.render import Renderer

    monkeypatch.setattr(Renderer, "stderr_is_terminal", property(lambda self: True))
    model = save(linear(), tmp_path / "lin.onnx")
    result = runner.invoke(app, ["bench", str(model), *FAST, "--batch-sizes", "1"])
    assert result.exit_code == 0, result.stderr
    assert "bench" in result.stderr and " steps" in result.stderr
    tail = result.stderr[result.stderr.rindex("\x1b[?25h") :]  # the cursor is shown again
    assert tail.replace("\x1b[1A", "").replace("\x1b[2K", "") == "\x1b[?25h\r"  # then erased
    assert "steps" not in result.stdout
    quiet = runner.invoke(app, ["-q", "bench", str(model), *FAST, "--batch-sizes", "1"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
