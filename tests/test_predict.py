"""predict API: equality with raw onnxruntime, formats, mapping, casts, ZipMap, upgrades."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from modelforge.engine.session import SessionConfig
from modelforge.errors import DataError, InvalidModelError, ProviderUnavailableError, UsageError
from modelforge.inference import explain, iter_predict, predict, predict_to
from tests import builders
from tests import predict_builders as pb

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture
def lin(tmp_path):
    return builders.save(builders.linear(4, 2), tmp_path / "lin.onnx")


def raw(model, feeds):
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def table(tmp_path, n=50, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    p = pb.write_csv(
        tmp_path / "x.csv", {f"f{i}": x[:, i] for i in range(4)} | {"id": list(range(n))}
    )
    return x, p


def test_csv_equals_raw_onnxruntime(lin, tmp_path):
    x, p = table(tmp_path)
    df = predict(lin, p, columns=["f0", "f1", "f2", "f3"], keep=["id"])
    want = raw(lin, {"x": x})[0]
    assert list(df.columns) == ["id", "y_0", "y_1"]
    assert np.array_equal(df[["y_0", "y_1"]].to_numpy(), want)
    assert df["id"].astype(int).tolist() == list(range(50))


@pytest.mark.parametrize("ofmt", ["csv", "tsv", "jsonl", "parquet", "npz"])
def test_output_formats_round_trip(lin, tmp_path, ofmt):
    x, p = table(tmp_path)
    out = tmp_path / f"out.{ofmt}"
    s = predict_to(lin, [str(p)], str(out), columns=["f0", "f1", "f2", "f3"], batch_size=7)
    assert s.rows == 50 and s.runs == 8 and s.output_format == ofmt
    want = raw(lin, {"x": x})[0]
    if ofmt == "npz":
        got = np.load(out, allow_pickle=False)["y"]
    elif ofmt == "parquet":
        import pyarrow.parquet as pq

        # one naming rule across tabular formats: y_0, y_1 as in CSV
        written = pq.read_table(out)
        assert written.column_names == ["y_0", "y_1"]
        got = np.stack([written.column(c).to_numpy() for c in ("y_0", "y_1")], axis=1)
    elif ofmt == "jsonl":
        got = pl.read_ndjson(out).select(["y_0", "y_1"]).to_numpy().astype(np.float32)
    else:
        got = pl.read_csv(
            out,
            separator="\t" if ofmt == "tsv" else ",",
            schema={"y_0": pl.Float32, "y_1": pl.Float32},
        ).to_numpy()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("ifmt", ["tsv", "parquet", "jsonl", "npy", "npz"])
def test_input_formats(lin, tmp_path, ifmt):
    x = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    want = raw(lin, {"x": x})[0]
    path = tmp_path / f"in.{ifmt}"
    df = pl.DataFrame({f"f{i}": x[:, i] for i in range(4)})
    if ifmt == "tsv":
        df.write_csv(path, separator="\t")
    elif ifmt == "parquet":
        df.write_parquet(path)
    elif ifmt == "jsonl":
        pl.DataFrame({"x": x.tolist()}).write_ndjson(path)  # list column named like the input
    elif ifmt == "npy":
        np.save(path, x.astype(">f4"))  # big-endian: converted
    else:
        np.savez(path, x=x.astype(np.float64), extra=np.ones(3))
    got = predict(lin, str(path), as_frame=False)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_npz_missing_key_lists_expected_and_found(tmp_path):
    model = builders.save(builders.add_two(), tmp_path / "m.onnx")
    p = tmp_path / "d.npz"
    np.savez(p, a=np.ones((2, 3), np.float32), c=np.ones((2, 3), np.float32))
    with pytest.raises(DataError) as info:
        predict(model, str(p))
    msg = str(info.value)
    assert "input(s) b" in msg and "found keys: a, c" in msg


def test_multi_input_by_map_and_npy_refused(tmp_path):
    model = builders.save(builders.add_two(), tmp_path / "m.onnx")
    cols = {c: [1.0, 2.0] for c in ["p", "q", "r", "s", "t", "u"]}
    p = pb.write_csv(tmp_path / "d.csv", cols)
    df = predict(model, p, maps={"a": ["p", "q", "r"], "b": ["s", "t", "u"]})
    assert df["sum_0"].tolist() == [2.0, 4.0] and df["diff_2"].tolist() == [0.0, 0.0]
    with pytest.raises(DataError, match="cannot map the columns"):
        predict(model, p)  # two inputs, nothing matches by name: ambiguous
    np.save(tmp_path / "d.npy", np.ones((2, 3), np.float32))
    with pytest.raises(DataError, match="NPY file feeds one input"):
        predict(model, str(tmp_path / "d.npy"))


def test_mapping_errors_and_precedence(lin, tmp_path):
    _, p = table(tmp_path)
    with pytest.raises(DataError) as info:
        predict(lin, p, columns=["f0", "f1", "zz", "f3"])
    assert "column 'zz'" in str(info.value) and "found: f0, f1, f2, f3, id" in str(info.value)
    with pytest.raises(DataError, match="expects float32 \\[N, 4\\] \\(4 columns\\) but"):
        predict(lin, p, columns=["f0", "f1"])
    with pytest.raises(UsageError, match="does not have"):
        predict(lin, p, maps={"nope": ["f0"]})
    # 5 columns remain for a [N, 4] input: positional mapping refuses, listing inputs
    with pytest.raises(DataError) as info2:
        predict(lin, p)
    assert "x float32 [N, 4]" in str(info2.value)
    # keep id -> exactly 4 remain -> positional (with a warning)
    df = predict(lin, p, keep=["id"])
    assert list(df.columns) == ["id", "y_0", "y_1"]


def test_stored_column_map_beats_name_and_position(lin, tmp_path):
    from modelforge.data.mapping import resolve_tabular
    from modelforge.model.schema import ModelSchema, TensorSpec

    schema = ModelSchema([TensorSpec("x", "tensor(float)", "float32", ["N", 2])], [])
    m = resolve_tabular(schema, ["a", "b", "x"], stored=["b", "a"])
    assert m.bindings[0].columns == ["b", "a"] and m.bindings[0].source == "stored column map"
    m2 = resolve_tabular(schema, ["a", "b", "c"], columns_opt=["c", "a"], stored=["b", "a"])
    assert m2.bindings[0].columns == ["c", "a"]
    m3 = resolve_tabular(schema, ["a", "b"])
    assert m3.bindings[0].source == "positional" and m3.warnings


def test_sklearn_pipeline_one_input_per_column_with_strings(tmp_path):
    model = pb.column_pipeline(tmp_path / "pipe.onnx")
    p = pb.write_csv(tmp_path / "d.csv", {
        "id": ["a1", "a2", "a3"], "city": ["rome", "paris", "oslo"],
        "income": [10.0, 20.0, 30.0], "age": [30, 50, 70],
    })  # fmt: skip
    df = predict(model, p, keep=["id"])
    feeds = {
        "age": np.array([[30], [50], [70]], np.float32),
        "income": np.array([[10], [20], [30]], np.float32),
        "city": np.array([["rome"], ["paris"], ["oslo"]], dtype=object),
    }
    label, proba = raw(model, feeds)
    assert df["label"].tolist() == label.tolist()
    assert np.array_equal(df[["probabilities_0", "probabilities_1"]].to_numpy(), proba)


def test_zipmap_outputs_and_string_labels(tmp_path):
    model = pb.zipmap_classifier(tmp_path / "iris.onnx")
    x, _ = pb.iris_like(30, seed=5)
    p = pb.write_csv(tmp_path / "d.csv", {n: x[:, i] for i, n in enumerate(pb.IRIS_NAMES)})
    df = predict(model, p)
    assert list(df.columns) == [
        "output_label",
        "output_probability_setosa",
        "output_probability_versicolor",
        "output_probability_virginica",
    ]
    labels, probs = raw(model, {"X": x})
    assert df["output_label"].tolist() == labels.tolist()
    assert np.allclose(df["output_probability_virginica"], [d["virginica"] for d in probs])
    out = tmp_path / "o.npz"
    predict_to(model, [str(p)], str(out))
    z = np.load(out, allow_pickle=False)
    assert z["output_label"].dtype.kind == "U"
    assert z["output_probability"].shape == (30, 3)
    assert z["output_probability_keys"].tolist() == ["setosa", "versicolor", "virginica"]


def test_string_outputs_and_formula_injection(tmp_path):
    model = pb.string_identity(tmp_path / "s.onnx")
    p = pb.write_csv(tmp_path / "d.csv", {"s": ["=1+2", "-3", "@x", "plain"]})
    buf = io.BytesIO()
    predict_to(model, [str(p)], stdout=buf)
    assert buf.getvalue().decode().splitlines() == ["out", "'=1+2", "-3", "'@x", "plain"]


def test_rank3_output_names(tmp_path):
    model = pb.rank3(tmp_path / "r.onnx")
    df = predict(model, {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}, as_frame=True)
    assert list(df.columns) == ["y_0_0", "y_0_1", "y_1_0", "y_1_1"]
    assert df.iloc[1].tolist() == [4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("fixed", [1, 3])
def test_fixed_batch_models(tmp_path, fixed):
    model = builders.save(builders.linear(4, 1, batch=fixed), tmp_path / "f.onnx")
    x = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    p = pb.write_csv(tmp_path / "d.csv", {f"f{i}": x[:, i] for i in range(4)})
    got = predict(model, p)["y_0"].to_numpy()
    want = np.concatenate([raw(model, {"x": x[i : i + fixed]})[0] for i in range(0, 9, fixed)])
    assert np.array_equal(got, want[:, 0])


@pytest.mark.parametrize("fixed", [1, 2])
@pytest.mark.parametrize("ofmt", ["csv", "npz"])
def test_fixed_batch_pads_the_last_batch(tmp_path, caplog, fixed, ofmt):
    """3 rows into a model fixed at [fixed, 4]: the last batch is padded with copies of its
    last row and the padding's outputs dropped; equal to onnxruntime run row by row."""
    model = builders.save(builders.linear(4, 2, batch=fixed), tmp_path / "f.onnx")
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    p = pb.write_csv(tmp_path / "d.csv", {f"f{i}": x[:, i] for i in range(4)})
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = np.concatenate(
        [sess.run(None, {"x": np.repeat(x[i : i + 1], fixed, axis=0)})[0][:1] for i in range(3)]
    )
    out = tmp_path / f"o.{ofmt}"
    with caplog.at_level("INFO", logger="modelforge"):
        s = predict_to(model, [str(p)], str(out), columns=["f0", "f1", "f2", "f3"])
    assert s.rows == 3 and s.runs == (3 if fixed == 1 else 2)
    if ofmt == "csv":
        f32 = {"y_0": pl.Float32, "y_1": pl.Float32}
        got = pl.read_csv(out, schema_overrides=f32).select("y_0", "y_1").to_numpy()
    else:
        with np.load(out, allow_pickle=False) as z:
            got = z["y"]
    assert got.dtype == np.float32 and np.array_equal(got, want)
    padded = [r.getMessage() for r in caplog.records if "padded" in r.getMessage()]
    assert bool(padded) == (fixed == 2)
    assert predict(model, {"x": x})["y"].shape == (3, 2)


def test_fixed_batch_pads_zipmap_outputs(tmp_path):
    """Sequence outputs (ZipMap lists of dicts) lose their padded rows too."""
    import onnx

    model = pb.zipmap_classifier(tmp_path / "z.onnx")
    m = onnx.load(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.shape.dim:
            vi.type.tensor_type.shape.dim[0].dim_value = 2
    fixed = tmp_path / "z2.onnx"
    onnx.save(m, fixed)
    x, _ = pb.iris_like(n=3)
    x = x[:3]
    sess = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    want = [sess.run(None, {"X": np.repeat(x[i : i + 1], 2, axis=0)}) for i in range(3)]
    got = predict(fixed, {"X": x})
    assert got["output_label"].tolist() == [w[0][0] for w in want]
    keys = list(want[0][1][0])
    probs = np.array([[w[1][0][k] for k in keys] for w in want], dtype=np.float32)
    assert got["output_probability"].shape == (3, len(keys))
    assert np.array_equal(got["output_probability"], probs)


def test_cast_policies_on_typed_input(lin, tmp_path):
    x64 = np.random.default_rng(0).normal(size=(5, 4))
    assert predict(lin, {"x": x64})["y"].shape == (5, 2)
    with pytest.raises(DataError, match="expects float32 but the data is float64"):
        predict(lin, {"x": x64}, cast="strict")
    big = x64.copy()
    big[3, 2] = 1e300
    with pytest.raises(
        DataError, match="beyond float32 range at '<dict>' row 4, element 2 of array 'x'"
    ):
        predict(lin, {"x": big}, cast="force")
    nan = x64.copy()
    nan[1, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        predict(lin, {"x": nan})
    assert np.isnan(predict(lin, {"x": nan}, allow_nan=True)["y"][1]).all()
    ints = np.arange(20).reshape(5, 4)
    assert predict(lin, {"x": ints})["y"].shape == (5, 2)
    with pytest.raises(DataError, match="not exactly representable"):
        predict(lin, {"x": ints + 2**40})
    with pytest.raises(UsageError):
        predict(lin, {"x": ints}, cast="sloppy")


def test_old_opset_upgraded_in_memory(tmp_path, caplog):
    model = builders.save(builders.linear(4, 1, opset=6), tmp_path / "old.onnx")
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    got = predict(model, {"x": x})["y"]
    new = builders.save(builders.linear(4, 1), tmp_path / "new.onnx")
    assert np.array_equal(got, raw(new, {"x": x})[0])
    assert "upgraded it in memory to opset 7" in caplog.text
    with pytest.raises(InvalidModelError) as info:
        predict(model, {"x": x}, no_upgrade=True)
    assert info.value.code == "opset_too_old"


def test_unavailable_provider_lists_available(lin):
    with pytest.raises(ProviderUnavailableError) as info:
        predict(lin, {"x": np.ones((1, 4), np.float32)}, providers=["tensorrt"])
    assert "cpu (CPUExecutionProvider)" in str(info.value)
    cfg = SessionConfig(providers=["tensorrt"], fallback=True)
    out = predict(lin, {"x": np.ones((1, 4), np.float32)}, session_config=cfg)
    assert out["y"].shape == (1, 2)


def test_iter_predict_streams_in_order(lin, tmp_path):
    x, p = table(tmp_path, n=30)
    parts = list(iter_predict(lin, p, keep=["id"], batch_size=4))
    # one read block, run in 8 onnxruntime calls, handed back batch_size rows at a time
    assert [(b.start, b.rows) for b in parts] == [(i, min(4, 30 - i)) for i in range(0, 30, 4)]
    got = np.concatenate([b.outputs[0].array for b in parts])
    assert np.array_equal(got, raw(lin, {"x": x})[0])


def test_explain_and_data_json(lin, tmp_path):
    _, p = table(tmp_path)
    res = explain(lin, [str(p)], keep=["id"])
    d = res.to_dict()
    assert d["feeds"][0]["columns"] == ["f0", "f1", "f2", "f3"]
    assert d["feeds"][0]["source"] == "positional"
    assert d["batch"]["batch_size"] == 10_000
    buf = io.BytesIO()
    s = predict_to(lin, None, data_json=json.dumps({"x": [[1, 2, 3, 4]]}), stdout=buf)
    rec = json.loads(buf.getvalue())
    want = raw(lin, {"x": np.array([[1, 2, 3, 4]], np.float32)})[0]
    assert s.output_format == "jsonl" and rec["y_0"] == pytest.approx(float(want[0, 0]))


def test_atomic_output_on_failure(lin, tmp_path):
    p = pb.write_csv(
        tmp_path / "d.csv",
        {"a": ["1"] * 5 + ["oops"], "b": ["1"] * 6, "c": ["1"] * 6, "d": ["1"] * 6},
    )
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match="line 7, column 'a'"):
        predict_to(lin, [str(p)], str(out))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.csv", "lin.onnx"]


def test_package_level_api_and_multiple_files(lin, tmp_path):
    import modelforge

    x, p = table(tmp_path, n=10)
    p2 = pb.write_csv(
        tmp_path / "x2.csv", {f"f{i}": x[:, i] for i in range(4)} | {"id": list(range(10, 20))}
    )
    df = modelforge.predict(lin, [str(p), str(p2)], keep=["id"])
    assert df["id"].astype(int).tolist() == list(range(20))
    assert np.array_equal(df[["y_0", "y_1"]].to_numpy()[10:], raw(lin, {"x": x})[0])
    other = pb.write_csv(tmp_path / "x3.csv", {"a": [1.0]})
    with pytest.raises(DataError, match="different columns"):
        modelforge.predict(lin, [str(p), str(other)], keep=["id"])


def test_jsonl_errors_name_the_line(lin, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"x": [1, 2, 3, 4]}\n{"x": [1, 2, 3, 4]}\nnot json\n')
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        predict(lin, str(p))
    p.write_text('{"x": [1, 2, 3]}\n')
    with pytest.raises(DataError, match="expects \\[N, 4\\] but the data has shape \\[1, 3\\]"):
        predict(lin, str(p))


def _jsonl_error(model, path, text, **kw):
    path.write_text(text)
    with pytest.raises(DataError) as info:
        predict(model, str(path), **kw)
    return info.value


@pytest.mark.parametrize("block", [None, 64])  # one block, or many (line numbers carry on)
def test_jsonl_value_errors_name_the_physical_line(lin, tmp_path, monkeypatch, block):
    """Blank lines count: the message names the line the bad value is on, not its row."""
    import modelforge.data.jsonl as tab

    if block is not None:
        monkeypatch.setattr(tab, "JSONL_BLOCK", block)
    p = tmp_path / "d.jsonl"
    ok = '{"f0": 1, "f1": 2, "f2": 3, "f3": 4}\n'
    err = _jsonl_error(lin, p, ok + "\n" + ok + "\n\n" + '{"f0": 1, "f1": 2, "f2": "x", "f3": 4}\n')
    assert f"input '{p}' line 6, column 'f2'" in err.message, err.message
    err = _jsonl_error(lin, p, ok + "\n   \n" + '{"f0": 1, "f1": 2, "f3": 4}\n' + ok)
    assert "line 4, column 'f2'" in err.message, err.message
    lists = '{"x": [1, 2, 3, 4]}\n'
    err = _jsonl_error(lin, p, lists + "\n\n" + '{"x": [1, 2, "x", 4]}\n')
    assert "line 4, element 2 of list 'x'" in err.message, err.message


@pytest.mark.parametrize("block", [None, 64])
def test_jsonl_ragged_list_names_file_line_and_column(lin, tmp_path, monkeypatch, block):
    import modelforge.data.jsonl as tab

    if block is not None:
        monkeypatch.setattr(tab, "JSONL_BLOCK", block)
    p = tmp_path / "r.jsonl"
    row = '{"x": [1, 2, 3, 4]}\n'
    err = _jsonl_error(lin, p, row + "\n\n" + row + '{"x": [1, 2, 3]}\n')
    assert err.code == "ragged_list"
    assert err.message.startswith(f"input '{p}' line 5, column 'x' holds a list of 3 values but")
    assert err.hint and "same length" in err.hint
    err = _jsonl_error(lin, p, row + "\n" + '{"x": null}\n')
    assert err.code == "ragged_list" and "line 3, column 'x' holds null" in err.message
    err = _jsonl_error(lin, p, row + row + '{"x": [1, null, 3, 4]}\n')
    assert "line 3, column 'x' holds a list with a null value" in err.message, err.message


def test_parquet_ragged_list_names_file_and_row(lin, tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"x": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0]]}).write_parquet(p)
    with pytest.raises(DataError) as info:
        predict(lin, str(p))
    assert info.value.code == "ragged_list"
    assert info.value.message.startswith(f"'{p}' row 3, column 'x' holds a list of 1 value but")


def test_parquet_from_stdin_and_dataframe_input(lin, tmp_path):
    x = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    df = pl.DataFrame({f"f{i}": x[:, i] for i in range(4)})
    buf = io.BytesIO()
    df.write_parquet(buf)
    out = io.BytesIO()
    predict_to(
        lin, ["-"], fmt="parquet", stdin=io.BytesIO(buf.getvalue()), stdout=out, out_format="csv"
    )
    got = pl.read_csv(io.BytesIO(out.getvalue()), schema={"y_0": pl.Float32, "y_1": pl.Float32})
    assert np.array_equal(got.to_numpy(), raw(lin, {"x": x})[0])
    frame = predict(lin, df.to_pandas())
    assert np.array_equal(frame.to_numpy(), raw(lin, {"x": x})[0])


def test_external_data_model_is_checked_and_runs(tmp_path):
    model = builders.with_external_data(tmp_path / "m")
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(predict(model, {"x": x})["y"], raw(model, {"x": x})[0])


def test_rebatch_carries_remainders_with_kept_columns():
    from modelforge.data.batch import Batch
    from modelforge.engine.runner import rebatch

    parts = [
        Batch(0, 4, {"x": np.arange(4)}, {"id": pl.Series("id", list("abcd"))}),
        Batch(4, 5, {"x": np.arange(4, 9)}, {"id": pl.Series("id", list("efghi"))}),
    ]
    got = list(rebatch(iter(parts), 3))
    assert [(b.start, b.rows) for b in got] == [(0, 3), (3, 6)]
    assert got[1].feeds["x"].tolist() == [3, 4, 5, 6, 7, 8]
    assert list(got[1].keep["id"]) == list("defghi")


def test_public_api_lives_in_inference_and_takes_options(tmp_path):
    lin = builders.save(builders.linear(4, 1), tmp_path / "lin1.onnx")
    import modelforge
    from modelforge import inference

    assert modelforge.predict is inference.predict
    assert modelforge.PredictOptions is inference.PredictOptions
    p = pb.features_csv(tmp_path, id=["a", "b", "c"])
    opts = inference.PredictOptions(columns=FEATURES, keep=["id"], batch_size=2)
    by_options = modelforge.predict(lin, p, options=opts)
    by_keywords = modelforge.predict(lin, p, columns=FEATURES, keep=["id"], batch_size=2)
    assert by_options.equals(by_keywords) and list(by_options.columns) == ["id", "y_0"]
    s = modelforge.predict_to(lin, [str(p)], str(tmp_path / "o.csv"), opts, outputs=["y"])
    assert s.runs == 2 and s.outputs == ["y"] and s.columns == ["id", "y_0"]
    with pytest.raises(TypeError, match="colums"):
        modelforge.predict(lin, p, colums=FEATURES)


@pytest.mark.parametrize("case", pb.REGISTRY, ids=lambda c: c.name)
def test_registry_model(case, tmp_path):
    """Every model of the predict registry, fed its data, passes its check."""
    model = case.build(tmp_path / f"{case.name}.onnx")
    case.check(predict(model, case.data()))


def test_closed_stdout_is_an_output_error_before_anything_runs(lin, tmp_path, monkeypatch):
    """``>&-`` leaves sys.stdout None: an OutputError saying so, not an AttributeError."""
    import sys

    from modelforge.errors import OutputError

    _, p = table(tmp_path, n=3)
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OutputError) as info:
        predict_to(lin, [str(p)], columns=FEATURES)
    assert info.value.code == "stdout_closed" and "-o FILE" in (info.value.hint or "")
    out = tmp_path / "o.csv"
    assert predict_to(lin, [str(p)], str(out), columns=FEATURES).rows == 3
