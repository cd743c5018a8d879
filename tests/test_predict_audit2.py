"""Defects found by the second predict audit: provider options, date/time casts, JSON Lines
--keep types, CR-only CSV line endings, models without inputs. Each through the library and
through the CLI (exit code, stderr, no partial output)."""

from __future__ import annotations

import datetime
import decimal
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.data.cast import coerce_array
from modelforge.engine.providers import check_provider_options, plan_providers
from modelforge.errors import DataError, UsageError
from modelforge.inference import predict
from tests import builders

runner = CliRunner()


@pytest.fixture
def ident(tmp_path):
    """float32 [N, 2] -> out, the same values."""
    return str(builders.save(builders.identity(), tmp_path / "id.onnx"))


@pytest.fixture
def csv2(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b\n1,2\n3,4\n")
    return str(p)


def _where(r: int, c: int) -> str:
    return f"row {r + 1}, column 'when'"


# --provider-option -------------------------------------------------------------------


def test_cpu_provider_options_are_refused_up_front():
    with pytest.raises(UsageError) as err:
        plan_providers(["cpu"], options={"bogus": "1"}, available=["CPUExecutionProvider"])
    assert err.value.code == "unknown_provider_option"
    assert "'bogus'" in err.value.message and "provider cpu" in err.value.message


def test_options_go_to_the_first_requested_provider_only():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    plan = plan_providers(["cuda"], options={"device_id": "0"}, available=avail)
    assert plan.providers == avail and plan.options == [{"device_id": "0"}, {}]


def test_options_of_a_missing_provider_are_dropped_with_a_warning_under_fallback(caplog):
    plan = plan_providers(
        ["cuda"], options={"device_id": "0"}, fallback=True, available=["CPUExecutionProvider"]
    )
    assert plan.providers == ["CPUExecutionProvider"] and plan.options == [{}]
    assert "'device_id' not used: provider cuda is not available" in caplog.text


def test_keys_onnxruntime_does_not_report_are_refused_listing_the_valid_ones():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    plan = plan_providers(["cuda"], options={"devcie_id": "0"}, available=avail)
    effective = {"CUDAExecutionProvider": {"device_id": "0", "gpu_mem_limit": "1"}}
    with pytest.raises(UsageError) as err:
        check_provider_options(effective, plan)
    assert "'devcie_id'" in err.value.message and "provider cuda" in err.value.message
    assert err.value.hint == "valid keys: device_id, gpu_mem_limit"
    check_provider_options(
        effective, plan_providers(["cuda"], options={"device_id": "1"}, available=avail)
    )


def test_cli_refuses_cpu_provider_options(ident, csv2, tmp_path):
    out = tmp_path / "o.csv"
    res = runner.invoke(
        app, ["predict", ident, csv2, "--provider-option", "bogus=1", "-o", str(out)]
    )
    assert res.exit_code == 2, res.stderr
    assert "--provider-option 'bogus': provider cpu takes no provider options" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()
    env = json.loads(
        runner.invoke(
            app, ["predict", ident, csv2, "--provider-option", "k=v", "-o", str(out), "--json"]
        ).stdout
    )
    assert env["error"]["code"] == "unknown_provider_option" and env["error"]["exit_code"] == 2


def test_cli_warns_when_onnxruntime_cannot_check_a_providers_options(ident, csv2):
    import onnxruntime as ort

    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no azure provider")
    res = runner.invoke(
        app, ["predict", ident, csv2, "--provider", "azure", "--provider-option", "k=v"]
    )
    assert res.exit_code == 0, res.stderr
    assert "reports no options for provider azure: --provider-option 'k'" in res.stderr


# date/time and decimal columns under --cast ---------------------------------------------


@pytest.mark.parametrize("policy", ["safe", "strict"])
@pytest.mark.parametrize(
    "arr",
    [
        np.array(["2024-01-01T00:00", "2024-01-02T00:00"], dtype="datetime64[us]"),
        np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]"),
        np.array([3, 4], dtype="timedelta64[s]"),
    ],
)
def test_dates_and_durations_are_not_numbers_unless_forced(arr, policy):
    with pytest.raises(DataError) as err:
        coerce_array(arr, "float32", policy=policy, allow_nan=False, where=_where, what="input 'x'")
    assert err.value.code == "dtype_mismatch"
    assert "row 1, column 'when'" in err.value.message and "input 'x'" in err.value.message
    assert arr.dtype.name in err.value.message and "--cast force" in (err.value.hint or "")
    forced = coerce_array(
        arr, "float32", policy="force", allow_nan=False, where=_where, what="input 'x'"
    )
    assert forced.dtype == np.float32
    assert forced.tolist() == arr.view(np.int64).astype(np.float32).tolist()


def test_forced_nat_is_a_missing_value():
    arr = np.array(["2024-01-01", "NaT"], dtype="datetime64[D]")
    with pytest.raises(DataError, match=r"missing value \(NaT\) at row 2"):
        coerce_array(arr, "float32", policy="force", allow_nan=False, where=_where, what="x")
    got = coerce_array(arr, "float32", policy="force", allow_nan=True, where=_where, what="x")
    assert got[0] == 19723 and np.isnan(got[1])
    with pytest.raises(DataError, match="missing value"):
        coerce_array(arr, "int64", policy="force", allow_nan=True, where=_where, what="x")


def _parquet(path: Path, **cols) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(cols), path)
    return str(path)


def test_cli_refuses_timestamp_tz_parquet_column_under_safe(ident, tmp_path):
    import pyarrow as pa

    when = [datetime.datetime(2024, 1, d, tzinfo=datetime.UTC) for d in (1, 2)]
    src = _parquet(
        tmp_path / "t.parquet",
        x=pa.array([1.0, 2.0]),
        when=pa.array(when, pa.timestamp("us", tz="UTC")),
    )
    out = tmp_path / "o.csv"
    res = runner.invoke(app, ["predict", ident, src, "--columns", "x,when", "-o", str(out)])
    assert res.exit_code == 5, res.stderr
    assert "t.parquet' row 1, column 'when' holds date/time values" in res.stderr
    assert "input 'x' expects float32" in res.stderr and not out.exists()
    res = runner.invoke(
        app, ["predict", ident, src, "--columns", "x,when", "--cast", "force", "-o", str(out)]
    )
    assert res.exit_code == 0, res.stderr
    assert out.read_text().splitlines()[1] == "1.0,1.7040672e+15"


def test_cli_refuses_datetime_npy_under_safe(ident, tmp_path):
    src = tmp_path / "d.npy"
    np.save(src, np.array([["2024-01-01", "2024-01-02"]], dtype="datetime64[D]"))
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 5 and "holds date/time values (datetime64[D])" in res.stderr
    assert res.stdout == ""


def test_decimal_columns_cast_like_their_decimal_text(ident, tmp_path):
    """A decimal is exact text: safe feeds it like the same CSV cell, strict refuses it."""
    import pyarrow as pa

    dec = pa.array([decimal.Decimal("1.25"), decimal.Decimal("0.10")], pa.decimal128(10, 2))
    src = _parquet(tmp_path / "m.parquet", a=dec, b=pa.array([1.0, 2.0]))
    got = predict(ident, src, columns=["a", "b"], as_frame=False)["out"]
    assert got.dtype == np.float32 and got[:, 0].tolist() == [1.25, np.float32(0.1)]
    res = runner.invoke(app, ["predict", ident, src, "--columns", "a,b", "--cast", "strict"])
    assert res.exit_code == 5 and "input 'x' expects float32" in res.stderr


# JSON Lines --keep ---------------------------------------------------------------------


def test_jsonl_keep_columns_keep_their_types_and_nulls(ident, tmp_path):
    import polars as pl

    src = tmp_path / "k.jsonl"
    src.write_text(
        '{"id": 1, "s": "a", "f": true, "a": 1.0, "b": 2.0}\n'
        '{"id": null, "s": null, "f": null, "a": 3.0, "b": 4.0}\n'
        '{"id": 3, "s": "=x", "f": false, "a": 5, "b": 6}\n'
    )
    args = ["predict", ident, str(src), "--columns", "a,b", "--keep", "id,s,f", "-o"]
    res = runner.invoke(app, [*args, str(tmp_path / "o.jsonl")])
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, None, 3]
    assert [r["s"] for r in rows] == ["a", None, "=x"]
    assert [r["f"] for r in rows] == [True, None, False]
    res = runner.invoke(app, [*args, str(tmp_path / "o.parquet")])
    assert res.exit_code == 0, res.stderr
    df = pl.read_parquet(tmp_path / "o.parquet")
    assert df.schema["id"] == pl.Int64 and df["id"].to_list() == [1, None, 3]
    assert df.schema["f"] == pl.Boolean and df.schema["s"] == pl.String


def test_frame_source_keep_columns_stay_typed_series():
    import polars as pl

    from modelforge.data.sources import FrameSource

    df = pl.DataFrame({"id": [1, None], "a": [1.0, 2.0], "b": [3.0, 4.0]})
    (batch,) = FrameSource(df).batches(["a", "b", "id"], {"a": "float32", "b": "float32"})
    assert isinstance(batch.columns["id"], pl.Series) and batch.columns["id"].dtype == pl.Int64
    assert isinstance(batch.columns["a"], np.ndarray)


# CR-only line endings ------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"a,b\r1,2\r3,4\r", b"a,b\r1,2\r3,4"])
def test_cr_only_line_endings_name_the_file_and_the_fix(ident, tmp_path, data):
    src = tmp_path / "mac.csv"
    src.write_bytes(data)
    out = tmp_path / "o.csv"
    res = runner.invoke(app, ["predict", ident, str(src), "-o", str(out)])
    assert res.exit_code == 5, res.stderr
    assert "mac.csv' ends its lines with a carriage return (CR) alone" in res.stderr
    assert "mac2unix" in res.stderr and not out.exists()


def test_crlf_and_quoted_cr_still_work(ident, tmp_path):
    src = tmp_path / "ok.csv"
    src.write_bytes(b'"a\rx",b\r\n1,2\r\n3,4\r\n')
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == ["out_0,out_1", "1.0,2.0", "3.0,4.0"]


def test_a_cr_inside_a_data_line_says_mixed_line_endings(ident, tmp_path):
    src = tmp_path / "mixed.csv"
    src.write_bytes(b"a,b\n1,2\r3,4\n")
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 5
    assert "line 2 has 3 fields" in res.stderr and "mixed line endings" in res.stderr


# models without inputs ------------------------------------------------------------------


def _constant_model(path: Path) -> str:
    value = numpy_helper.from_array(np.array([1.0, 2.0], np.float32))
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=value)],
        "const",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return str(builders.save(builders._model(graph), path))


def test_a_model_without_inputs_is_a_clear_error(tmp_path, csv2):
    model = _constant_model(tmp_path / "const.onnx")
    out = tmp_path / "o.csv"
    for extra in ([csv2], ["--data", "{}"], []):
        res = runner.invoke(app, ["predict", model, *extra, "-o", str(out)], input=b"")
        assert res.exit_code == 5, (extra, res.stderr)
        assert "const.onnx' has no inputs" in res.stderr and "'y'" in res.stderr
        assert not out.exists()
    res = runner.invoke(app, ["predict", model, csv2, "-o", str(out), "--json"])
    assert json.loads(res.stdout)["error"]["code"] == "no_model_inputs"
    with pytest.raises(DataError, match="has no inputs"):
        predict(model, {"x": np.zeros((1, 2), np.float32)})


# found by the acceptance pass ------------------------------------------------------------


@pytest.mark.parametrize("data", [b'{"a": 1, "b": 2}\n', b'{"x": [[1, 2]]}', b"[[1, 2]]\n"])
def test_json_on_stdin_without_format_says_so(ident, data):
    res = runner.invoke(app, ["predict", ident, "-"], input=data)
    assert res.exit_code == 5
    assert "input '<stdin>' looks like JSON, not CSV" in res.stderr
    assert "--format jsonl" in res.stderr and res.stdout == ""


def test_a_bracketed_csv_header_is_still_csv(ident):
    res = runner.invoke(app, ["predict", ident, "-"], input=b"[a],b\n1,2\n")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[1] == "1.0,2.0"


def test_non_integral_text_for_an_int_input_names_the_dtype_once(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["i"], ["o"])],
        "ints",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("o", TensorProto.INT64, ["N", 1])],
    )
    model = str(builders.save(builders._model(graph), tmp_path / "ints.onnx"))
    src = tmp_path / "i.csv"
    src.write_text("i\n1.5\n")
    res = runner.invoke(app, ["predict", model, str(src)])
    assert res.exit_code == 5
    assert "non-integral value for int64 input at input" in res.stderr
    assert "int64 input int64" not in res.stderr


def test_a_1d_array_for_a_2d_input_hints_at_the_shape(ident, tmp_path):
    src = tmp_path / "r.npy"
    np.save(src, np.ones(3, np.float32))
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 5 and "array needs the shape [N, 2]" in res.stderr


_AB = '{"a": 1, "b": 2}\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_AB + '{"a": [1], "b": 3}\n', "line 2: key 'a' holds a list, but a number on line 1"),
        (_AB + '\n{"a": true, "b": 3}\n', "line 3: key 'a' holds a bool, but a number"),
        (_AB + '{"a": 1e999, "b": 3}\n', "line 2 is not valid JSON: 1e999 is beyond the float"),
        ('{"a": NaN, "b": 2}\n', "line 1 is not valid JSON: NaN is not valid JSON"),
    ],
)
def test_jsonl_type_errors_name_the_line_and_key(ident, tmp_path, text, expected):
    src = tmp_path / "j.jsonl"
    src.write_text(text)
    res = runner.invoke(app, ["predict", ident, str(src), "-o", str(tmp_path / "o.csv")])
    assert res.exit_code == 5, res.stderr
    assert expected in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o.csv").exists()


def test_jsonl_with_a_utf8_bom_is_read(ident, tmp_path):
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"a": 1, "b": 2}\n')
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == ["out_0,out_1", "1.0,2.0"]


def test_npy_output_refusal_names_the_output_not_its_shape(ident, csv2, tmp_path):
    out = tmp_path / "o.npy"
    res = runner.invoke(
        app, ["predict", ident, csv2, "--keep", "a", "--columns", "a,b", "-o", str(out)]
    )
    assert res.exit_code == 2, res.stderr  # a column both fed and kept is a usage error
    src = tmp_path / "k.csv"
    src.write_text("id,a,b\nr1,1,2\n")
    res = runner.invoke(app, ["predict", ident, str(src), "--keep", "id", "-o", str(out)])
    assert res.exit_code == 10, res.stderr
    assert "has output out and --keep columns" in res.stderr and "[1, 2]" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("how", [["--columns", "a,a"], ["--map", "x=b,b"]])
def test_one_column_may_feed_two_positions(ident, csv2, how):
    """It crashed in polars (a select of one column twice) with exit 1."""
    res = runner.invoke(app, ["predict", ident, csv2, *how])
    assert res.exit_code == 0, res.stderr
    col = 1 if how[0] == "--columns" else 2
    assert res.stdout.splitlines()[1:] == [f"{v}.0,{v}.0" for v in (col, col + 2)]


@pytest.mark.timeout(60)
def test_predict_timeout_is_exit_8_with_a_hint_for_predict(ident, tmp_path):
    """stdin stays open and silent: --timeout stops the run; no output file is left."""
    import os
    import subprocess
    import sys

    out = tmp_path / "o.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "modelforge", "predict", ident, "--timeout", "1", "-o", str(out)]
    with subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as proc:
        try:
            proc.wait(timeout=40)  # stdin stays open: the reader waits on it
        finally:
            proc.kill()
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert proc.returncode == 8, err
    text = err.decode()
    assert "did not finish within 1 s" in text and "--timeout S (0 = none;" in text
    assert "for checks; 0 = none" not in text and not out.exists()


def test_an_npz_without_arrays_says_none_found(ident, tmp_path):
    src = tmp_path / "e.npz"
    np.savez(src)
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 5 and "found keys: none)" in res.stderr


def test_api_frame_keeps_nullable_ids_as_nullable_ints(ident, tmp_path):
    import pandas as pd

    src = tmp_path / "k.jsonl"
    src.write_text(
        '{"id": 1, "f": true, "a": 1, "b": 2}\n{"id": null, "f": null, "a": 3, "b": 4}\n'
    )
    df = predict(ident, str(src), columns=["a", "b"], keep=["id", "f"])
    assert str(df["id"].dtype) == "Int64" and df["id"].iloc[0] == 1
    assert df["id"].isna().tolist() == [False, True]
    assert str(df["f"].dtype) == "boolean" and bool(df["f"].iloc[0]) is True
    assert df["out_0"].tolist() == [1.0, 3.0]
    plain = predict(ident, pd.DataFrame({"id": [7, 8], "a": [1.0, 2.0], "b": [3.0, 4.0]}),
                    columns=["a", "b"], keep=["id"])  # fmt: skip
    assert str(plain["id"].dtype) == "int64"


def _types_model(tmp_path: Path) -> str:
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"o{n}"]) for n in ("i", "b", "s")],
        "types",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("b", TensorProto.BOOL, ["N", 1]),
            helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("oi", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("ob", TensorProto.BOOL, ["N", 1]),
            helper.make_tensor_value_info("os", TensorProto.STRING, ["N", 1]),
        ],
    )
    return str(builders.save(builders._model(graph), tmp_path / "types.onnx"))


def test_nulls_in_inline_json_are_missing_values_not_ragged(tmp_path):
    model = _types_model(tmp_path)
    data = '{"i": [[1], [2]], "b": [[true], [false]], "s": [["x"], [null]]}'
    res = runner.invoke(app, ["predict", model, "--data", data])
    assert res.exit_code == 5 and "missing value at '--data' row 2" in res.stderr
    res = runner.invoke(app, ["predict", model, "--data", data, "--allow-nan"])
    assert res.exit_code == 0, res.stderr
    assert [json.loads(line)["os_0"] for line in res.stdout.splitlines()] == ["x", ""]
    bad_bool = '{"i": [[1]], "b": [[null]], "s": [["x"]]}'
    res = runner.invoke(app, ["predict", model, "--data", bad_bool, "--allow-nan"])
    assert res.exit_code == 5 and "bool inputs cannot hold a missing value" in res.stderr
    src = tmp_path / "d.json"
    src.write_text('{"x": [[1, null]]}')
    ident = str(builders.save(builders.identity(), tmp_path / "id.onnx"))
    res = runner.invoke(app, ["predict", ident, str(src), "--allow-nan"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == ["out_0,out_1", "1.0,NaN"]
    res = runner.invoke(app, ["predict", ident, "--data", '{"x": [[1, 2], [3]]}'])
    assert res.exit_code == 5 and "is ragged or mixes types" in res.stderr


def _run_shell(cmd: str, cwd: Path) -> tuple[int, str]:
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, capture_output=True, timeout=60, env=env, text=True
    )
    return proc.returncode, proc.stderr


@pytest.mark.timeout(120)
def test_stdio_redirected_onto_an_input_is_refused(ident, tmp_path):
    import shlex
    import sys

    data = "a,b\n1,2\n"
    src = tmp_path / "d.csv"
    src.write_text(data)
    mf = f"{shlex.quote(sys.executable)} -m modelforge predict {shlex.quote(ident)}"
    rc, err = _run_shell(f"{mf} - -o d.csv < d.csv", tmp_path)
    assert rc == 2 and "output 'd.csv' is the file stdin reads from" in err, err
    assert src.read_text() == data
    rc, err = _run_shell(f"{mf} d.csv >> d.csv", tmp_path)
    assert rc == 2 and "would be appended to the data being read" in err, err
    assert src.read_text() == data
    rc, err = _run_shell(f"{mf} d.csv > d.csv", tmp_path)
    assert rc == 2 and "the shell emptied it before predict started" in err, err
    src.write_text(data)
    rc, err = _run_shell(f"{mf} - -o o.csv < d.csv && {mf} d.csv > p.csv", tmp_path)
    assert rc == 0, err
    assert (tmp_path / "o.csv").read_text() == (tmp_path / "p.csv").read_text()


def test_kept_dates_decimals_and_nulls_in_json_and_npz_output(ident, tmp_path):
    """JSON output crashed (exit 1) on a kept timestamp; a null text id became "None"."""
    import pyarrow as pa

    when = [datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)] * 2
    src = _parquet(
        tmp_path / "k.parquet",
        t=pa.array(when, pa.timestamp("us", tz="UTC")),
        d=pa.array([decimal.Decimal("1.25"), None], pa.decimal128(10, 2)),
        id=pa.array(["r1", None]),
        n=pa.array([1, None], pa.int64()),
        a=pa.array([1.0, 2.0]),
        b=pa.array([3.0, 4.0]),
    )
    out = tmp_path / "o.json"
    args = ["predict", ident, src, "--columns", "a,b", "--keep", "t,d,id,n"]
    res = runner.invoke(app, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["t"] == ["2024-01-01T00:00:00+00:00"] * 2
    assert doc["d"] == ["1.25", None] and doc["id"] == ["r1", None] and doc["n"] == [1, None]
    assert doc["out"] == [[1.0, 3.0], [2.0, 4.0]]
    npz = tmp_path / "o.npz"
    res = runner.invoke(app, [*args, "-o", str(npz)])
    assert res.exit_code == 10 and "--keep column 'd' has missing values" in res.stderr
    assert not npz.exists()
    res = runner.invoke(
        app, ["predict", ident, src, "--columns", "a,b", "--keep", "t", "-o", str(npz)]
    )
    assert res.exit_code == 0, res.stderr
    assert np.load(npz)["t"].dtype == np.dtype("datetime64[us]")


def test_a_stray_cr_in_an_lf_header_is_not_called_cr_only(ident, tmp_path):
    src = tmp_path / "h.csv"
    src.write_bytes(b"a\rz,b\n1,2\n")
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 5
    assert "the header line holds a carriage return (CR) inside it" in res.stderr
    assert "alone" not in res.stderr


def test_iter_predict_yields_at_most_batch_size_rows(ident, tmp_path):
    """CSV blocks are 16 MB: batch_size only cut the onnxruntime runs, not what came back."""
    from modelforge.inference import iter_predict

    src = tmp_path / "d.csv"
    src.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(7)))
    got = [(b.start, b.rows) for b in iter_predict(ident, str(src), batch_size=3)]
    assert got == [(0, 3), (3, 3), (6, 1)]
    fixed = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = str(builders.save(builders._model(fixed), tmp_path / "fixed2.onnx"))
    parts = list(iter_predict(model, str(src), batch_size=3))
    assert [(b.start, b.rows) for b in parts] == [(0, 2), (2, 2), (4, 2), (6, 1)]
    assert parts[-1].outputs[0].value.tolist() == [[6.0, 6.0]]


@pytest.mark.parametrize("fmt", ["parquet", "npy", "npz", "json"])
def test_an_empty_binary_or_json_input_says_empty(ident, tmp_path, fmt):
    src = tmp_path / f"e.{fmt}"
    src.write_bytes(b"")
    res = runner.invoke(app, ["predict", ident, str(src)])
    assert res.exit_code == 5 and "is empty (0 bytes)" in res.stderr, res.stderr
    res = runner.invoke(app, ["predict", ident, "-", "--format", fmt], input=b"")
    assert res.exit_code == 5 and "input '<stdin>' is empty (0 bytes)" in res.stderr


def test_onnxruntimes_own_refusal_of_a_key_is_the_same_usage_error():
    """CUDA/TensorRT/... parse options with onnxruntime's ProviderOptionsParser, whose
    message is 'Unknown provider option: "<key>".' (onnxruntime/core/framework/
    provider_options_utils.h); it comes back as an exception or in the EP Error banner."""
    from modelforge.engine.session import unknown_option_error

    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    plan = plan_providers(["cuda"], options={"devcie_id": "0"}, available=avail)
    text = '[ONNXRuntimeError] : 1 : FAIL : Unknown provider option: "devcie_id".'
    err = unknown_option_error(text, plan)
    assert err is not None and err.code == "unknown_provider_option" and err.exit_code == 2
    assert "'devcie_id': not an option of provider cuda" in err.message
    assert unknown_option_error("some other failure", plan) is None


def test_decimals_feed_an_int_input_only_when_integral(tmp_path):
    import pyarrow as pa

    model = str(builders.save(builders.identity(TensorProto.INT64), tmp_path / "i.onnx"))
    ints = pa.array([decimal.Decimal("2.00"), decimal.Decimal("3.00")], pa.decimal128(10, 2))
    src = _parquet(tmp_path / "ok.parquet", a=ints, b=pa.array([7, 8]))
    got = predict(model, src, columns=["a", "b"], as_frame=False)["out"]
    assert got.dtype == np.int64 and got.tolist() == [[2, 7], [3, 8]]
    half = pa.array([decimal.Decimal("2.50"), decimal.Decimal("3.00")], pa.decimal128(10, 2))
    bad = _parquet(tmp_path / "bad.parquet", a=half, b=pa.array([7, 8]))
    res = runner.invoke(app, ["predict", model, bad, "--columns", "a,b"])
    assert res.exit_code == 5 and "non-integral value for int64 input at" in res.stderr
    assert "row 1, column 'a'" in res.stderr
