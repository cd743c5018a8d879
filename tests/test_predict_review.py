"""Fixes from review: --keep/output name clashes, header formula neutralising, the JSON
Lines line cap and endless devices, memory cap and timeout of the forked child, progress
through the Renderer, message wording (line numbers, missing values, shapes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import DataError, UsageError
from modelforge.inference import predict, predict_to
from tests import builders
from tests import predict_builders as pb

runner = CliRunner()
FEATURES = ["f0", "f1", "f2", "f3"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelforge", *args]


@pytest.fixture
def lin(tmp_path):
    """y: float32 [N, 1] -> CSV column y_0, array 'y'."""
    return builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")


def _data(tmp_path, **extra):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    cols = {f"f{i}": x[:, i] for i in range(4)} | extra
    return pb.write_csv(tmp_path / "d.csv", cols)


# 1. kept column named like an output column --------------------------------------------


@pytest.mark.parametrize(
    ("keep", "ofmt"),
    [("y_0", "csv"), ("y_0", "tsv"), ("y_0", "jsonl"), ("y", "parquet"), ("y", "npz")],
)
def test_keep_clash_refused_for_every_format(lin, tmp_path, keep, ofmt):
    p = _data(tmp_path, **{keep: ["a", "b", "c"]})
    out = tmp_path / f"o.{ofmt}"
    with pytest.raises(DataError) as info:
        predict_to(lin, [str(p)], str(out), columns=FEATURES, keep=[keep])
    e = info.value
    assert e.code == "column_clash"
    assert f"kept column '{keep}'" in e.message and "--keep" in (e.hint or "")
    assert "--outputs" in (e.hint or "")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["d.csv", "lin.onnx"]


def test_keep_names_that_do_not_clash_in_that_format_are_written(lin, tmp_path):
    """'y' clashes in NPZ (array y) but not in CSV (column y_0), and the reverse for y_0."""
    p = _data(tmp_path, y=["a", "b", "c"], y_0=["d", "e", "f"])
    s = predict_to(lin, [str(p)], str(tmp_path / "o.csv"), columns=FEATURES, keep=["y"])
    assert s.columns == ["y", "y_0"]
    s = predict_to(lin, [str(p)], str(tmp_path / "o.npz"), columns=FEATURES, keep=["y_0"])
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["y", "y_0"] and z["y_0"].tolist() == ["d", "e", "f"]
        assert z["y"].shape == (3, 1)


def test_keep_clash_with_zipmap_keys_array_and_columns(tmp_path):
    model = pb.zipmap_classifier(tmp_path / "z.onnx")
    x, _ = pb.iris_like(n=3)
    cols = {f"f{i}": x[:3, i] for i in range(4)}
    p = pb.write_csv(tmp_path / "d.csv", cols | {"output_probability_keys": ["a", "b", "c"]})
    with pytest.raises(DataError, match="output_probability_keys.*NPZ") as info:
        predict_to(model, [str(p)], str(tmp_path / "o.npz"), keep=["output_probability_keys"],
                   columns=FEATURES)  # fmt: skip
    assert info.value.code == "column_clash"
    # ZipMap column names depend on the labels: the writer refuses them before writing
    p2 = pb.write_csv(tmp_path / "e.csv", cols | {"output_probability_setosa": [1, 2, 3]})
    with pytest.raises(DataError, match="output_probability_setosa"):
        predict_to(model, [str(p2)], str(tmp_path / "o.csv"), columns=FEATURES,
                   keep=["output_probability_setosa"])  # fmt: skip
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.npz").exists()


def test_keep_clash_cli_one_line_exit_5_no_output(lin, tmp_path):
    p = _data(tmp_path, y=["a", "b", "c"])
    res = runner.invoke(app, ["predict", str(lin), str(p), "--columns", ",".join(FEATURES),
                              "--keep", "y", "-o", str(tmp_path / "o.npz")])  # fmt: skip
    assert res.exit_code == 5
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "kept column 'y'" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "o.npz").exists()


# 4. formula injection in CSV/TSV header names ------------------------------------------


@pytest.mark.parametrize("ofmt", ["csv", "tsv"])
def test_header_names_are_neutralised(lin, tmp_path, ofmt):
    name = '=HYPERLINK("http://x")'
    p = _data(tmp_path, **{name: ["k", "-1", "@x"]})
    out = tmp_path / f"o.{ofmt}"
    predict_to(lin, [str(p)], str(out), columns=FEATURES, keep=[name])
    import csv

    with open(out, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t" if ofmt == "tsv" else ","))
    assert rows[0] == ["'" + name, "y_0"]
    assert [r[0] for r in rows[1:]] == ["k", "-1", "'@x"]
    # JSON Lines and the Python API keep names as they are
    predict_to(lin, [str(p)], str(tmp_path / "o.jsonl"), columns=FEATURES, keep=[name])
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert name in first


# 2. JSON Lines line cap; endless devices ----------------------------------------------


def test_jsonl_line_cap_names_the_line(lin, tmp_path, monkeypatch):
    import modelforge.data.tabular as tab

    monkeypatch.setattr(tab, "MAX_RECORD_BYTES", 1000)
    monkeypatch.setattr(tab, "JSONL_BLOCK", 256)
    ok = json.dumps({"x": [1.0, 2.0, 3.0, 4.0]})
    long = json.dumps({"x": [1.0, 2.0, 3.0, 4.0], "pad": "z" * 2000})
    data = "\n".join([ok, "", ok, long, ok]) + "\n"
    with pytest.raises(DataError) as info:
        predict_to(lin, ["-"], stdin=io.BytesIO(data.encode()), stdout=io.BytesIO(), fmt="jsonl")
    assert info.value.code == "line_too_long"
    assert "line 4 is longer than" in info.value.message
    # below the cap, many short reads and a blank line keep their physical line numbers
    bad = "\n".join([ok, "", ok, "{nope", ok]) + "\n"
    with pytest.raises(DataError, match="line 4 is not valid JSON"):
        predict_to(lin, ["-"], stdin=io.BytesIO(bad.encode()), stdout=io.BytesIO(), fmt="jsonl")
    out = io.BytesIO()
    good = "\n".join([ok] * 50) + "\n"
    s = predict_to(lin, ["-"], stdin=io.BytesIO(good.encode()), stdout=out, fmt="jsonl")
    assert s.rows == 50


@pytest.mark.timeout(120)
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize(
    ("fmt", "code"),
    [
        ("jsonl", "line_too_long"),
        ("csv", "line_too_long"),
        ("parquet", "invalid_parquet"),
        ("npy", "invalid_npy"),
        ("npz", "invalid_npz"),
    ],
)
def test_dev_zero_input_fails_fast_for_every_format(lin, tmp_path, fmt, code):
    res = runner.invoke(app, ["predict", str(lin), "/dev/zero", "--format", fmt, "--json",
                              "-o", str(tmp_path / "o.csv")])  # fmt: skip
    assert res.exit_code == 5, res.stdout + res.stderr
    assert json.loads(res.stdout)["error"]["code"] == code


@pytest.mark.timeout(60)
def test_fifo_array_input_checks_the_signature_first(lin, tmp_path):
    import os
    import threading

    fifo = tmp_path / "in.npz"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as fh:
            fh.write(b"x,y\n1,2\n")

    t = threading.Thread(target=feed)
    t.start()
    with pytest.raises(DataError, match="not an NPZ file") as info:
        predict_to(lin, [str(fifo)], stdout=io.BytesIO())
    t.join(10)
    assert info.value.code == "invalid_npz"


# 3 (CLI side) and 5. fixed batches through a real process; memory cap, timeout ---------


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
    p = _data(tmp_path)
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
    p = _data(tmp_path)
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


@pytest.mark.timeout(60)
def test_forked_timeout_and_option_checks(tmp_path):
    import time

    from modelforge.engine.forked import forked_limits, run_forked
    from modelforge.errors import ResourceLimitError

    leftover = tmp_path / ".o.tmp"

    def slow():
        leftover.write_text("partial")
        time.sleep(30)
        return {}

    t0 = time.monotonic()
    with pytest.raises(ResourceLimitError) as info:
        run_forked(slow, cleanup=[leftover], limits=forked_limits(0, 0.5))
    assert info.value.code == "timeout" and "0.5 s" in info.value.message
    assert time.monotonic() - t0 < 20 and not leftover.exists()
    with pytest.raises(UsageError, match="at least 4096"):
        forked_limits(100)
    with pytest.raises(UsageError):
        forked_limits(None, -1)
    assert forked_limits(0).memory_mb is None and forked_limits(0).timeout_s is None
    assert forked_limits(4096, 3).to_dict() == {"timeout_s": 3, "memory_mb": 4096}


def test_memory_env_applies_and_small_values_are_raised(monkeypatch):
    from modelforge.engine.forked import MIN_MEMORY_MB, forked_limits

    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "5000")
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "5")
    assert forked_limits().to_dict() == {"timeout_s": None, "memory_mb": 5000}
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "512")
    assert forked_limits().memory_mb == MIN_MEMORY_MB
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "0")
    assert forked_limits().memory_mb is None


def test_cli_rejects_a_tiny_memory_limit(lin, tmp_path):
    p = _data(tmp_path)
    res = runner.invoke(app, ["predict", str(lin), str(p), "--memory-limit", "10"])
    assert res.exit_code == 2 and "at least 4096" in res.stderr and res.stdout == ""
    res = runner.invoke(app, ["bench", str(lin), "--memory-limit", "10"])
    assert res.exit_code == 2 and "at least 4096" in res.stderr


# 6. progress through the Renderer ------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_renderer_progress_redraws_on_terminals_only():
    from modelforge.render import Renderer

    err = _Tty()
    r = Renderer("predict", stderr=err)
    r.progress("10 rows")
    r.progress("5")
    r.progress("")
    assert err.getvalue() == "\r10 rows" + "\r5      " + "\r \r"
    quiet = _Tty()
    Renderer("predict", stderr=quiet, quiet=True).progress("x")
    plain = io.StringIO()
    Renderer("predict", stderr=plain).progress("x")
    assert quiet.getvalue() == "" and plain.getvalue() == ""


def test_predict_and_bench_progress_use_the_renderer(lin, tmp_path, monkeypatch):
    from modelforge.render import Renderer

    seen: list[str] = []
    monkeypatch.setattr(Renderer, "stderr_is_terminal", property(lambda self: True))
    monkeypatch.setattr(Renderer, "progress", lambda self, text: seen.append(text))
    monkeypatch.setenv("MODELFORGE_PREDICT_IN_PROCESS", "1")
    p = _data(tmp_path)
    res = runner.invoke(app, ["predict", str(lin), str(p), "--columns", ",".join(FEATURES),
                              "--batch-size", "1"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert seen and seen[0].startswith("3 rows, ") and "rows/s" in seen[0] and seen[-1] == ""
    assert "rows/s" not in res.stdout
    seen.clear()
    res = runner.invoke(app, ["bench", str(lin), "--runs", "2", "--rounds", "1",
                              "--warmup", "0", "--batch-sizes", "1"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert seen and seen[-1] == ""


# 7. messages ---------------------------------------------------------------------------


def test_csv_errors_name_physical_lines(tmp_path):
    model = builders.save(builders.linear(2, 1), tmp_path / "l2.onnx")
    cases = [
        (b"a,b\n1,2\n3,\n", "line 3, column 'b': the cell is empty"),
        (b"a,b\n1,2\n1,#N/A\n", "line 3, column 'b': '#N/A' means a missing value"),
        (b"a,b\n1,2\n\xe9,3\n", "(line 3)"),
        (b'a,b\n1,2\n"x\ny",3\n', "line 3, column 'a'"),
        (b'a,b\n"1\n",2\n3,zz\n', "line 4, column 'b'"),
        (b"a,b\n1,2\n3\n", "line 3 has 1 fields"),
        (b'a,b\n1,2\n"3\n4",5,6\n', "line 3 has 3 fields"),
    ]
    for raw, words in cases:
        p = tmp_path / "d.csv"
        p.write_bytes(raw)
        with pytest.raises(DataError) as info:
            predict(model, p, columns=["a", "b"])
        assert words in info.value.message, (raw, info.value.message)
        assert "None" not in info.value.message


def test_explain_renders_shapes_plainly(lin, tmp_path):
    p = _data(tmp_path)
    res = runner.invoke(app, ["predict", str(lin), str(p), "--columns", ",".join(FEATURES),
                              "--explain"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "input   x float32 [N, 4] <- f0, f1, f2, f3" in res.stdout
    assert "output  y tensor(float) [N, 1]" in res.stdout
    assert "'N'" not in res.stdout


# 8. module rename and the shared options -----------------------------------------------


def test_public_api_lives_in_inference_and_takes_options(lin, tmp_path):
    import modelforge
    from modelforge import inference

    assert modelforge.predict is inference.predict
    assert modelforge.PredictOptions is inference.PredictOptions
    assert not (Path(modelforge.__file__).parent / "predict.py").exists()
    p = _data(tmp_path, id=["a", "b", "c"])
    opts = inference.PredictOptions(columns=FEATURES, keep=["id"], batch_size=2)
    by_options = modelforge.predict(lin, p, options=opts)
    by_keywords = modelforge.predict(lin, p, columns=FEATURES, keep=["id"], batch_size=2)
    assert by_options.equals(by_keywords) and list(by_options.columns) == ["id", "y_0"]
    s = modelforge.predict_to(lin, [str(p)], str(tmp_path / "o.csv"), opts, outputs=["y"])
    assert s.runs == 2 and s.outputs == ["y"] and s.columns == ["id", "y_0"]
    with pytest.raises(TypeError, match="colums"):
        modelforge.predict(lin, p, colums=FEATURES)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_binary_formats_piped_into_a_capped_child(lin, tmp_path, fmt):
    """Piped stdin is read in chunks: one read of the whole array cap (half the RAM) would
    itself exceed the child's address-space cap."""
    import polars as pl

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    src = tmp_path / f"x.{fmt}"
    if fmt == "parquet":
        pl.DataFrame({f"f{i}": x[:, i] for i in range(4)}).write_parquet(src)
    else:
        np.savez(src, x=x)
    cmd = " ".join(_cli("predict", str(lin), "-", "--format", fmt, "--memory-limit", "4096"))
    proc = subprocess.run(["bash", "-c", f"cat {src} | {cmd}"], capture_output=True, timeout=80)
    assert proc.returncode == 0, proc.stderr
    import onnxruntime as ort

    want = ort.InferenceSession(str(lin), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = np.array(proc.stdout.decode().split()[1:], dtype=np.float32)
    assert np.array_equal(got, want[0][:, 0])
