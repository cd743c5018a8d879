"""Formats: one naming rule for outputs, pandas index columns, stdin sniffing, Parquet row
groups (the cluster's source), stored column maps, closing sources, onnxruntime's prints."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.data.sources import ParquetSource
from modelforge.errors import DataError
from modelforge.inference import predict, predict_to
from tests import builders
from tests import predict_builders as pb

runner = CliRunner()
FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture
def lin(tmp_path):
    return builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelforge", *args]


def _x(n=6):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4)


def test_n_by_1_output_is_named_alike_in_every_tabular_format(lin, tmp_path):
    import pyarrow.parquet as pq

    p = pb.write_csv(tmp_path / "d.csv", {c: _x()[:, i] for i, c in enumerate(FEATURES)})
    predict_to(lin, [str(p)], str(tmp_path / "o.csv"))
    predict_to(lin, [str(p)], str(tmp_path / "o.parquet"))
    predict_to(lin, [str(p)], str(tmp_path / "o.jsonl"))
    csv = pl.read_csv(tmp_path / "o.csv")
    pq_table = pq.read_table(tmp_path / "o.parquet")
    jl = pl.read_ndjson(tmp_path / "o.jsonl")
    assert csv.columns == pq_table.column_names == jl.columns == ["y_0"]
    assert str(pq_table.schema.field("y_0").type) == "float"  # a plain column, not a list
    assert np.allclose(csv["y_0"].to_numpy(), pq_table.column("y_0").to_numpy())


def test_pandas_index_columns_are_not_data(lin, tmp_path, caplog):
    import pandas as pd

    df = pd.DataFrame(_x(), columns=FEATURES, index=[10, 11, 12, 13, 14, 15])
    df.to_parquet(tmp_path / "p.parquet")
    s = predict_to(lin, [str(tmp_path / "p.parquet")], str(tmp_path / "o.csv"))
    assert s.rows == 6 and s.mapping["unused_columns"] == []
    assert not any("__index_level_0__" in r.getMessage() for r in caplog.records)
    assert s.mapping["inputs"][0]["columns"] == FEATURES  # by position, without the index


@pytest.mark.parametrize("fmt", ["npy", "npz", "parquet"])
def test_binary_stdin_is_recognised_by_its_magic_bytes(lin, tmp_path, fmt):
    x = _x()
    path = tmp_path / f"d.{fmt}"
    if fmt == "npy":
        np.save(path, x)
    elif fmt == "npz":
        np.savez(path, x=x)
    else:
        pl.DataFrame({c: x[:, i] for i, c in enumerate(FEATURES)}).write_parquet(path)
    stdin = io.BytesIO(path.read_bytes())
    s = predict_to(lin, None, str(tmp_path / "o.npz"), stdin=stdin)
    assert s.input_format == fmt and s.rows == 6


def test_binary_stdin_through_the_cli(lin, tmp_path):
    np.save(tmp_path / "x.npy", _x())
    with open(tmp_path / "x.npy", "rb") as fh:
        proc = subprocess.run([sys.executable, "-m", "modelforge", "predict", str(lin)],
                              stdin=fh, capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[0] == "y_0" and len(proc.stdout.splitlines()) == 7


def test_parquet_source_restricted_to_row_groups(lin, tmp_path):
    """The cluster's entry point: a slice of one file -> one Parquet part file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = _x(9)
    table = pa.table({c: x[:, i] for i, c in enumerate(FEATURES)} | {"id": list(range(9))})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=3)
    src = ParquetSource(tmp_path / "big.parquet", row_groups=[2, 0])
    assert src.total_rows == 6
    out = tmp_path / "part-0.parquet"
    s = predict_to(lin, src, str(out), columns=FEATURES, keep=["id"])
    part = pq.read_table(out)
    assert s.rows == 6 and part.column("id").to_pylist() == [6, 7, 8, 0, 1, 2]
    with pytest.raises(DataError, match="row group 5 does not exist"):
        ParquetSource(tmp_path / "big.parquet", row_groups=[5])


def test_stored_column_map_refuses_a_header_it_cannot_match(lin, tmp_path):
    from modelforge.store.add import add_model

    add_model(lin, "lin", columns=["a", "b", "c", "d"])
    p = pb.write_csv(tmp_path / "h.csv", {c: _x()[:, i] for i, c in enumerate("wxyz")})
    with pytest.raises(DataError) as info:
        predict_to("lin", [str(p)], str(tmp_path / "o.csv"))
    e = info.value
    assert e.code == "missing_column" and "stored column map" in e.message
    assert "a, b, c, d" in e.message and "found: w, x, y, z" in e.message
    res = runner.invoke(app, ["predict", "lin", str(p)])
    assert res.exit_code == 5 and "stored column map" in res.stderr and res.stdout == ""


def test_closing_the_batches_closes_the_source(lin, tmp_path):
    from modelforge.data.options import PredictOptions
    from modelforge.inference import load, make_plan

    p = pb.write_csv(tmp_path / "d.csv", {c: _x()[:, i] for i, c in enumerate(FEATURES)})
    plan = make_plan(load(lin, parse=True), str(p), PredictOptions())
    fh = plan.sources[0]._fh  # type: ignore[attr-defined]
    it = plan.batches()
    next(it)
    it.close()  # what Ctrl-C unwinding does: no "Exception ignored in generator"
    assert fh.closed


def test_onnxruntime_prints_during_session_creation_never_reach_stdout():
    code = (
        "import os\n"
        "from modelforge.engine.session import _stdout_fd_to_stderr\n"
        "with _stdout_fd_to_stderr():\n"
        "    os.write(1, b'*** EP Error ***\\n')\n"
        "print('data')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.stdout == b"data\n" and b"EP Error" in proc.stderr


def test_a_provider_that_failed_to_initialise_is_named(lin):
    import onnxruntime as ort

    from modelforge.engine.providers import ProviderPlan
    from modelforge.engine.session import SessionConfig, _check_providers
    from modelforge.errors import ProviderUnavailableError

    inner = ort.InferenceSession(str(lin), providers=["CPUExecutionProvider"])
    plan = ProviderPlan(["CUDAExecutionProvider"], ["CUDAExecutionProvider",
                        "CPUExecutionProvider"], [{}, {}], [])  # fmt: skip
    printed = "*************** EP Error ***************\nEP Error libcudart.so.12: cannot open\n"
    with pytest.raises(ProviderUnavailableError) as info:
        _check_providers(inner, plan, SessionConfig(providers=["cuda"]), printed)
    assert "provider cuda failed to initialise: libcudart.so.12" in info.value.message
    assert "--fallback" in (info.value.hint or "")
    _check_providers(inner, plan, SessionConfig(providers=["cuda"], fallback=True), printed)


def test_float64_zipmap_conversion_gets_a_hint(tmp_path):
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, labels = pb.iris_like()
    df = pd.DataFrame(x.astype(np.float64), columns=pb.IRIS_NAMES)
    clf = LogisticRegression(max_iter=300).fit(df, labels)
    onnx.save_model(to_onnx(clf, df[:1].to_numpy(), target_opset=17), tmp_path / "z.onnx")
    res = runner.invoke(app, ["predict", str(tmp_path / "z.onnx"), "--data", '{"X": [[1,2,3,4]]}'])
    assert res.exit_code != 0 and "ZipMap" in res.stderr and "float32" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


@pytest.mark.timeout(60)
def test_ctrl_c_ends_with_130_and_no_generator_noise(lin, tmp_path):
    """Ctrl-C while rows stream in: exit 130, one line, no "Exception ignored in generator"."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "modelforge", "predict", str(lin), "--columns", "f0,f1,f2,f3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"f0,f1,f2,f3\n" + b"1,2,3,4\n" * 10)
    proc.stdin.flush()
    assert proc.stdout.readline() == b"y_0\n"  # it is streaming
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert b"Exception ignored" not in err and b"Traceback" not in err, err


# --keep clashes, header neutralising, JSON Lines line cap, endless devices, messages ----


@pytest.mark.parametrize(
    ("keep", "ofmt"),
    [("y_0", "csv"), ("y_0", "tsv"), ("y_0", "jsonl"), ("y_0", "parquet"), ("y", "npz")],
)
def test_keep_clash_refused_for_every_format(lin, tmp_path, keep, ofmt):
    p = pb.features_csv(tmp_path, **{keep: ["a", "b", "c"]})
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
    p = pb.features_csv(tmp_path, y=["a", "b", "c"], y_0=["d", "e", "f"])
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
    p = pb.features_csv(tmp_path, y=["a", "b", "c"])
    res = runner.invoke(app, ["predict", str(lin), str(p), "--columns", ",".join(FEATURES),
                              "--keep", "y", "-o", str(tmp_path / "o.npz")])  # fmt: skip
    assert res.exit_code == 5
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "kept column 'y'" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("ofmt", ["csv", "tsv"])
def test_header_names_are_neutralised(lin, tmp_path, ofmt):
    name = '=HYPERLINK("http://x")'
    p = pb.features_csv(tmp_path, **{name: ["k", "-1", "@x"]})
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


def test_jsonl_line_cap_names_the_line(lin, tmp_path, monkeypatch):
    import modelforge.data.jsonl as tab

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
    p = pb.features_csv(tmp_path)
    res = runner.invoke(app, ["predict", str(lin), str(p), "--columns", ",".join(FEATURES),
                              "--explain"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "input   x float32 [N, 4] <- f0, f1, f2, f3" in res.stdout
    assert "output  y tensor(float) [N, 1]" in res.stdout
    assert "'N'" not in res.stdout


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


def test_one_format_registry_for_readers_and_writers():
    from modelforge.data.formats import REGISTRY
    from modelforge.data.inputs import SOURCES
    from modelforge.data.writers import WRITERS

    assert set(SOURCES) == set(REGISTRY) == set(WRITERS)
