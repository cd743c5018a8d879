"""Tensor models: inputs that do not share a row dimension run once on the whole arrays;
outputs that are not one entry per row are written whole (NPZ/NPY/JSON) and refused by
tabular formats; --explain says which mode and why; --whole forces it. Plus the server's
entry point (``cast_feeds``) for decoded request tensors. The models are built by
``tests/predict_builders.py`` (its ``REGISTRY`` checks each one's result too)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.data.plan import cast_feeds
from modelforge.errors import DataError, OutputError
from modelforge.inference import explain, predict, predict_to
from tests import builders
from tests import predict_builders as pb

runner = CliRunner()
F = TensorProto.FLOAT


@pytest.fixture
def broadcast(tmp_path):
    return pb.broadcast_add(tmp_path / "bcast.onnx")


@pytest.fixture
def weights(tmp_path):
    return pb.weight_matmul(tmp_path / "matmul.onnx")


@pytest.fixture
def sequences(tmp_path):
    return pb.split_to_sequence(tmp_path / "seq.onnx")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_broadcast_operands_run_once_on_whole_arrays(broadcast, tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([10, 20, 30], dtype=np.float32)
    data = _npz(tmp_path / "d.npz", a=a, b=b)
    ex = explain(broadcast, [data])
    assert ex.batch["mode"] == "whole" and "first dimensions differ" in ex.batch["reason"]
    s = predict_to(broadcast, [data], str(tmp_path / "o.npz"))
    assert s.mode == "whole" and s.runs == 1
    assert np.array_equal(np.load(tmp_path / "o.npz")["y"], a + b)


def test_weight_input_next_to_a_row_input(weights, tmp_path):
    x = np.ones((5, 3), np.float32)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = predict(weights, {"x": x, "w": w})
    assert np.array_equal(got["y"], x @ w)
    # same leading dim (3 rows of x, 3 rows of w): still whole, the model fixes w's
    x3 = np.ones((3, 3), np.float32)
    ex = explain(weights, {"x": x3, "w": w})
    assert ex.batch["mode"] == "whole" and "fixes its first dimension to 3" in ex.batch["reason"]
    assert np.array_equal(predict(weights, {"x": x3, "w": w}, batch_size=1)["y"], x3 @ w)


def test_scalar_input_and_json_data(tmp_path):
    m = pb.scalar_scale(tmp_path / "scale.onnx")
    res = runner.invoke(app, ["predict", str(m), "--data", '{"x": [[1, 2], [3, 4]], "k": 2}'])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"y": [[2.0, 4.0], [6.0, 8.0]]}
    res = runner.invoke(app, ["predict", str(m), "--explain", "--data", '{"x": [[1, 2]], "k": 2}'])
    assert "mode    whole" in res.stdout and "input 'k' is a scalar" in res.stdout


def test_sequence_and_scalar_outputs_are_written_whole(sequences, tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = _npz(tmp_path / "d.npz", x=x)
    s = predict_to(sequences, [data], str(tmp_path / "o.npz"))
    assert s.mode == "whole"
    with np.load(tmp_path / "o.npz") as z:
        assert z["n"].shape == () and int(z["n"]) == 3
        assert [z[f"parts_{i}"].tolist() for i in range(3)] == [[r] for r in x.tolist()]
    predict_to(sequences, [data], str(tmp_path / "o.json"))
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["n"] == 3 and doc["parts"] == [[r] for r in x.tolist()]
    got = predict(sequences, {"x": x})
    assert int(got["n"]) == 3 and len(got["parts"]) == 3
    with pytest.raises(OutputError) as info:
        predict_to(sequences, [data], str(tmp_path / "o.csv"))
    assert info.value.code == "output_not_per_row" and "'parts'" in info.value.message
    assert "npz" in (info.value.hint or "") and "--outputs" in (info.value.hint or "")
    assert not (tmp_path / "o.csv").exists()
    res = runner.invoke(app, ["predict", str(sequences), data, "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code != 0 and "output 'parts'" in res.stderr and "Traceback" not in res.stderr


def test_reduction_output_is_not_per_row(tmp_path):
    """y [1, 3] from N rows: run once; CSV refuses naming the output; NPY takes it."""
    m = pb.row_sum(tmp_path / "rsum.onnx")
    x = np.ones((5, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    s = predict_to(m, [str(tmp_path / "x.npy")], str(tmp_path / "o.npy"))
    assert s.mode == "whole" and np.load(tmp_path / "o.npy").tolist() == [[15.0]]
    with pytest.raises(OutputError, match="output 'y' is \\[1, 1\\], not one entry per input row"):
        predict_to(m, [str(tmp_path / "x.npy")], str(tmp_path / "o.csv"))


def test_split_outputs_of_different_lengths(tmp_path):
    m = pb.uneven_split(tmp_path / "split.onnx")
    np.save(tmp_path / "x.npy", np.array([1, 2, 3], np.float32))
    predict_to(m, [str(tmp_path / "x.npy")], str(tmp_path / "o.npz"))
    with np.load(tmp_path / "o.npz") as z:
        assert z["p"].tolist() == [1, 2] and z["q"].tolist() == [3]


def test_row_batching_stays_the_default_and_whole_can_be_forced(tmp_path):
    lin = builders.save(builders.linear(4, 2), tmp_path / "lin.onnx")
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    s = predict_to(lin, [str(tmp_path / "x.npy")], str(tmp_path / "o.npz"), batch_size=7)
    assert s.mode == "rows" and s.runs == 8
    assert (
        "share a leading row dimension" in explain(lin, [str(tmp_path / "x.npy")]).batch["reason"]
    )
    s2 = predict_to(
        lin, [str(tmp_path / "x.npy")], str(tmp_path / "w.npz"), batch_size=7, whole=True
    )
    assert s2.mode == "whole" and s2.runs == 1
    assert np.allclose(np.load(tmp_path / "o.npz")["y"], np.load(tmp_path / "w.npz")["y"])
    res = runner.invoke(app, ["predict", str(lin), str(tmp_path / "x.npy"), "--whole", "--explain"])
    assert "mode    whole" in res.stdout and "--whole was given" in res.stdout


def test_whole_mode_checks_fixed_dims_naming_the_input(broadcast, tmp_path):
    data = _npz(tmp_path / "d.npz", a=np.ones((3, 3), np.float32), b=np.ones(3, np.float32))
    with pytest.raises(DataError, match=r"input 'a' expects \[2, 3\].*dimension 0"):
        predict_to(broadcast, [data], str(tmp_path / "o.npz"))


def test_cast_feeds_for_a_server(weights):
    """Decoded request tensors -> feeds of the model's dtypes; messages name the input."""
    import onnx

    from modelforge.model.schema import extract_schema

    schema = extract_schema(onnx.load(weights))
    feeds = cast_feeds({"x": np.ones((2, 3)), "w": np.ones((3, 4), np.int32)}, schema)
    assert feeds["x"].dtype == np.float32 and feeds["w"].dtype == np.float32
    with pytest.raises(DataError, match="no array for input.*w"):
        cast_feeds({"x": np.ones((2, 3))}, schema)
    with pytest.raises(DataError, match=r"input 'w' expects \[3, 4\]"):
        cast_feeds({"x": np.ones((2, 3)), "w": np.ones((4, 4))}, schema)
    with pytest.raises(DataError, match="integer not exactly representable") as info:
        cast_feeds({"x": np.full((1, 3), 2**40), "w": np.ones((3, 4))}, schema)
    assert "'request'" in info.value.message


def test_whole_on_tabular_data_keeps_the_kept_columns(tmp_path):
    lin = builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    csv = pb.write_csv(
        tmp_path / "d.csv", {f"f{i}": x[:, i] for i in range(4)} | {"id": list("abc")}
    )
    s = predict_to(lin, [str(csv)], str(tmp_path / "o.csv"), keep=["id"], whole=True,
                   columns=["f0", "f1", "f2", "f3"])  # fmt: skip
    assert s.mode == "whole" and s.runs == 1 and s.columns == ["id", "y_0"]
    import polars as pl

    assert pl.read_csv(tmp_path / "o.csv")["id"].to_list() == ["a", "b", "c"]


def _shared_add(path, dims):
    """c = a + b, both declared ``dims`` (symbolic names shared between the inputs)."""
    from onnx import helper

    node = helper.make_node("Add", ["a", "b"], ["c"])
    ports = [pb._vi("a", dims), pb._vi("b", dims)]
    return pb._tensor_model(path, "shared", [node], ports, [pb._vi("c", dims)])


def test_shared_symbolic_dim_with_different_rows_is_a_data_error(tmp_path):
    """a [N, 2] and b [N, 2] with 2 and 3 rows: a DataError naming both (exit 5), not
    onnxruntime's broadcast failure (exit 7); the server's cast_feeds says the same."""
    import onnx

    from modelforge.model.schema import extract_schema

    model = _shared_add(tmp_path / "two.onnx", ["N", 2])
    data = _npz(tmp_path / "d.npz", a=np.ones((2, 2), np.float32), b=np.ones((3, 2), np.float32))
    with pytest.raises(DataError) as info:
        predict_to(model, [data], str(tmp_path / "o.npz"))
    msg = info.value.message
    assert "'a' and 'b' share dimension 'N'" in msg and "'a' has 2 rows and 'b' has 3 rows" in msg
    assert "d.npz" in msg and info.value.code == "shape_mismatch"
    assert not (tmp_path / "o.npz").exists()
    res = runner.invoke(app, ["predict", str(model), data])
    assert res.exit_code == 5 and res.stdout == "", res.stderr
    assert "share dimension 'N'" in res.stderr and "onnxruntime" not in res.stderr
    schema = extract_schema(onnx.load(model))
    with pytest.raises(DataError, match="'a' has 1 row and 'b' has 2 rows"):
        cast_feeds({"a": np.ones((1, 2)), "b": np.ones((2, 2))}, schema)
    same = cast_feeds({"a": np.ones((2, 2)), "b": np.ones((2, 2))}, schema)
    assert same["a"].shape == (2, 2)


def test_shared_symbolic_dim_off_the_row_axis_is_checked_per_batch(tmp_path):
    model = _shared_add(tmp_path / "nt.onnx", ["N", "T"])
    a, b = np.ones((4, 3), np.float32), np.ones((4, 5), np.float32)
    data = _npz(tmp_path / "d.npz", a=a, b=b)
    with pytest.raises(DataError, match="'a' has 3 on axis 1 and 'b' has 5 on axis 1"):
        predict_to(model, [data], str(tmp_path / "o.npz"), batch_size=2)
    ok = _npz(tmp_path / "ok.npz", a=a, b=np.full((4, 3), 2, np.float32))
    s = predict_to(model, [ok], str(tmp_path / "o.npz"), batch_size=2)
    assert s.rows == 4 and np.array_equal(np.load(tmp_path / "o.npz")["c"], np.full((4, 3), 3))
