"""Casting and missing values: one cast place for every format (``--cast force`` applies
to CSV text as to NPY), complex data refused for real inputs, one missing-value rule."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import DataError
from modelforge.inference import predict, predict_to
from tests import builders

runner = CliRunner()


@pytest.fixture
def int8_model(tmp_path):
    return builders.save(
        builders.identity(TensorProto.INT8, ("N",), name="v"), tmp_path / "i8.onnx"
    )


@pytest.fixture
def str_model(tmp_path):
    return builders.save(
        builders.identity(TensorProto.STRING, ("N",), name="s"), tmp_path / "s.onnx"
    )


@pytest.fixture
def int_model(tmp_path):
    return builders.save(
        builders.identity(TensorProto.INT64, ("N",), name="v"), tmp_path / "i.onnx"
    )


def test_cast_force_applies_to_csv_text_as_to_npy(int8_model, tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("v\n300\n5\n")
    np.save(tmp_path / "d.npy", np.array([300, 5], np.int64))
    with pytest.raises(DataError) as info:
        predict_to(int8_model, [str(csv)], str(tmp_path / "o.npz"))
    assert "--cast force" in (info.value.hint or "")
    want = np.array([300, 5], np.int64).astype(np.int8).tolist()  # numpy-style: 44, 5
    for data in (csv, tmp_path / "d.npy"):
        predict_to(int8_model, [str(data)], str(tmp_path / "o.npz"), cast="force")
        assert np.load(tmp_path / "o.npz")["out"].tolist() == want
    res = runner.invoke(app, ["predict", str(int8_model), str(csv), "--cast", "force"])
    assert res.exit_code == 0 and res.stdout.split() == ["out", "44", "5"]


def test_complex_data_is_refused_for_a_float_input(tmp_path):
    lin = builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")
    np.save(tmp_path / "c.npy", (np.ones((2, 4)) + 1j).astype(np.complex64))
    with pytest.raises(DataError) as info:
        predict_to(lin, [str(tmp_path / "c.npy")], str(tmp_path / "o.npz"))
    e = info.value
    assert e.code == "dtype_mismatch" and "complex64" in e.message and "c.npy" in e.message
    assert "input 'x' expects float32" in e.message
    predict_to(lin, [str(tmp_path / "c.npy")], str(tmp_path / "o.npz"), cast="force")
    assert np.load(tmp_path / "o.npz")["y"].shape == (2, 1)  # force: the real part


def _parquet_strings(tmp_path):
    path = tmp_path / "s.parquet"
    pl.DataFrame({"s": ["a", None, "c"]}).write_parquet(path)
    return path


def test_missing_strings_alike_in_csv_and_parquet(str_model, tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text('s\na\n""\nc\n')
    pq = _parquet_strings(tmp_path)
    for data in (csv, pq):
        with pytest.raises(DataError) as info:
            predict_to(str_model, [str(data)], str(tmp_path / "o.csv"))
        assert info.value.code == "nan_value" and "--allow-nan" in (info.value.hint or "")
        assert "row" in info.value.message or "line" in info.value.message
        predict_to(str_model, [str(data)], str(tmp_path / "o.npz"), allow_nan=True)
        assert np.load(tmp_path / "o.npz")["out"].tolist() == ["a", "", "c"]


def test_missing_integers_never_hint_allow_nan(int_model, tmp_path):
    csv = tmp_path / "i.csv"
    csv.write_text('v\n1\n""\n3\n')
    pq = tmp_path / "i.parquet"
    pl.DataFrame({"v": [1, None, 3]}).write_parquet(pq)
    for data in (csv, pq):
        for allow in (False, True):
            with pytest.raises(DataError) as info:
                predict_to(int_model, [str(data)], str(tmp_path / "o.csv"), allow_nan=allow)
            e = info.value
            assert e.code == "nan_value" and "missing" in e.message, e.message
            assert "--allow-nan" not in (e.hint or "") and "fill" in (e.hint or "")


def test_missing_floats_become_nan_with_allow_nan_in_every_format(tmp_path):
    lin = builders.save(builders.identity(TensorProto.FLOAT, ("N",), name="v"), tmp_path / "f.onnx")
    csv = tmp_path / "f.csv"
    csv.write_text('v\n1.5\n""\n')
    pq = tmp_path / "f.parquet"
    pl.DataFrame({"v": [1.5, None]}).write_parquet(pq)
    frame = pl.DataFrame({"v": [1.5, None]})
    for data in (str(csv), str(pq), frame):
        got = predict(lin, data, allow_nan=True, as_frame=False)["out"]
        assert got[0] == 1.5 and np.isnan(got[1])
        with pytest.raises(DataError, match="allow-nan|missing"):
            predict(lin, data, as_frame=False)
