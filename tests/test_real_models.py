"""Defects found by driving the CLI with real exported models (PyTorch dynamo/TorchScript,
skl2onnx pipelines), each reproduced with a model of the same structure built in code."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import modelforge
from modelforge.cli.app import app
from modelforge.model.schema import extract_schema
from modelforge.serve.models import _port, batch_problem
from tests import real_model_builders as rb
from tests.serve_support import save, start_server

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def _ports(model: onnx.ModelProto):
    schema = extract_schema(model)
    return (
        [_port(s, output=False) for s in schema.inputs],
        [_port(s, output=True) for s in schema.outputs],
    )


# -- serve: inputs whose first dimensions are different dimensions -------------------------
def test_batch_problem_names_inputs_with_different_first_dims():
    why = batch_problem(*_ports(rb.two_batches()))
    assert why is not None
    assert "'x' [batch, 4]" in why and "'table' [k, 4]" in why and "'batch' and 'k'" in why


def test_batch_problem_accepts_outputs_named_differently_and_refuses_non_row_outputs():
    model = rb.mean_opset20()
    assert "output 'all_mean'" in (batch_problem(*_ports(model)) or "")
    del model.graph.output[1]
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"  # exporter's own name
    assert batch_problem(*_ports(model)) is None
    inputs, outputs = _ports(rb.small_cnn())
    assert batch_problem(inputs, outputs) is None


def test_batch_problem_takes_tf2onnx_unk_names_as_unnamed():
    """tf2onnx names every unknown dim on its own (unk__12, unk__14): a Keras model with two
    inputs must still batch."""
    model = rb.two_batches()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "unk__12"
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "unk__14"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "unk__15"
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "unk__16"
    assert batch_problem(*_ports(model)) is None


def test_serve_never_merges_requests_of_a_model_with_two_batch_dims(tmp_path):
    """x [batch, 4] scored against table [k, 4]: merging two requests concatenates the
    tables too, and every answer gets the other requests' columns. Found with
    --batching on (which skips the probe) on a torch-exported model; /config also said
    max_batch_size 256 with table's dims [4], as if table were per row."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    model = rb.two_batches()
    path = save(model, tmp_path / "two.onnx")
    cnn = save(rb.small_cnn(), tmp_path / "cnn.onnx")
    bert = save(rb.bert_embeddings(), tmp_path / "bert.onnx")
    args = [str(path), str(cnn), str(bert), "--batching", "on", "--max-queue-delay", "3000",
            "--grpc-port", "0"]  # fmt: skip
    server = start_server(args)
    try:
        served = {m["name"]: m for m in server.info["models"]}
        assert served["two"]["batching"] == [] and served["cnn"]["batching"] == [1]
        assert served["bert"]["batching"] == [1]
        assert "'table' [k, 4]" in server.stderr()
        with urllib.request.urlopen(f"{server.url}/v2/models/two/config", timeout=30) as r:
            config = json.loads(r.read())
        assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
        assert [i["dims"] for i in config["input"]] == [[-1, 4], [-1, 4]]
        sessions = {
            "two": ort.InferenceSession(model.SerializeToString()),
            "cnn": ort.InferenceSession(rb.small_cnn().SerializeToString()),
            "bert": ort.InferenceSession(rb.bert_embeddings().SerializeToString()),
        }
        wrong: list[str] = []
        checked: list[str] = []

        def client(k: int) -> None:
            rng = np.random.default_rng(k)
            lib = grpcclient if k % 2 else httpclient  # half the clients over gRPC
            c = lib.InferenceServerClient(server.grpc if k % 2 else server.hostport)
            for i in range(9):
                if (k + i) % 3 == 0:
                    feeds = {"x": rng.normal(size=(2, 4)), "table": rng.normal(size=(2, 4))}
                    name = "two"
                elif (k + i) % 3 == 1:
                    feeds = {"image": rng.normal(size=(1 + i % 3, 3, 8, 8))}
                    name = "cnn"
                else:  # distinct sequence lengths: only equal ones may share a run
                    shape = (1 + i % 2, 3 + (k + i) % 3)
                    feeds = {
                        "input_ids": rng.integers(0, 100, size=shape),
                        "token_type_ids": rng.integers(0, 2, size=shape),
                        "attention_mask": rng.integers(0, 2, size=shape),
                    }
                    name = "bert"
                feeds = {
                    n: v.astype(np.float32 if v.dtype.kind == "f" else np.int64)
                    for n, v in feeds.items()
                }
                ins = []
                for n, v in feeds.items():
                    kind = "FP32" if v.dtype == np.float32 else "INT64"
                    inp = lib.InferInput(n, list(v.shape), kind)
                    inp.set_data_from_numpy(v)
                    ins.append(inp)
                got = c.infer(name, ins)
                out = sessions[name].get_outputs()[0].name
                want = sessions[name].run(None, feeds)[0]
                if got.as_numpy(out).shape != want.shape or not np.allclose(
                    got.as_numpy(out), want, rtol=1e-5, atol=1e-6
                ):
                    wrong.append(f"{name} client {k} request {i}")
                checked.append(name)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not wrong, wrong[:5]
        assert len(checked) == 72 and set(checked) == {"two", "cnn", "bert"}
    finally:
        assert server.stop() == 0


def test_serve_auto_says_why_a_model_with_two_batch_dims_is_not_batched(tmp_path):
    path = save(rb.two_batches(), tmp_path / "two.onnx")
    server = start_server([str(path)])
    try:
        assert server.info["models"][0]["batching"] == []
        line = next(x for x in server.stderr_lines if "dynamic batching is off" in x)
        assert "do not share their first dimension ('batch' and 'k')" in line
    finally:
        assert server.stop() == 0


# -- convert: dynamo exports downgraded below opset 18 -------------------------------------
def test_convert_downgrade_drops_stale_noop_with_empty_axes(tmp_path):
    """The dynamo exporter writes ReduceMean with noop_with_empty_axes=0; onnx's 18 -> 17
    adapter kept the attribute and the result failed onnx.checker ("Unrecognized
    attribute: noop_with_empty_axes")."""
    src = save(rb.mean_opset20(), tmp_path / "mean.onnx")
    out = tmp_path / "mean17.onnx"
    res = invoke("convert", src, "--opset", "17", "-o", out)
    assert res.exit_code == 0, res.stderr
    converted = onnx.load(out)
    onnx.checker.check_model(converted)
    assert converted.opset_import[0].version == 17
    for node in converted.graph.node:
        assert "noop_with_empty_axes" not in {a.name for a in node.attribute}
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    row, whole = ort.InferenceSession(str(out)).run(None, {"x": x})
    assert np.allclose(row, x.mean(axis=1), atol=1e-6) and np.isclose(whole, x.mean(), atol=1e-6)


def test_reduce_with_noop_and_no_axes_is_not_silently_changed():
    from modelforge.model.opset import _drop_stale_noop_with_empty_axes

    model = rb.mean_opset20()
    model.graph.node[1].attribute[1].i = 1  # noop_with_empty_axes=1, no axes: an identity
    _drop_stale_noop_with_empty_axes(model, 17)
    names = [{a.name for a in n.attribute} for n in model.graph.node]
    assert "noop_with_empty_axes" in names[1]  # kept: the old op cannot express it


# -- models diff: a retrained model with the same architecture ------------------------------
def test_diff_reports_changed_weights_when_outputs_are_not_compared(tmp_path):
    a = save(rb.small_cnn(), tmp_path / "cnn.onnx")
    b = save(rb.small_cnn(scale=1.5), tmp_path / "cnn2.onnx")
    r = modelforge.diff_models(a, b)
    assert r.weights["changed"] == ["fc.weight"] and r.weights["compared"] == 3
    assert r.structure_changes == ["weights"]
    assert any("fc.weight" in w and "--data" in w for w in r.warnings)
    res = invoke("models", "diff", a, b)
    assert res.exit_code == 0
    assert "weights: 1 of 3 initializers have other values (fc.weight)" in res.stdout
    assert res.stdout.splitlines()[-1] == "EQUAL (outputs not compared)"
    data = tmp_path / "img.npy"
    np.save(data, np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32))
    res = invoke("models", "diff", a, b, "--data", data)
    assert res.exit_code == 9 and "DIFFERENT: outputs" in res.stdout
    same = modelforge.diff_models(a, save(rb.small_cnn(), tmp_path / "again.onnx"))
    assert same.weights["changed_count"] == 0 and same.structure_changes == []


def test_diff_of_a_retrained_sklearn_pipeline_names_the_changed_nodes(tmp_path):
    """scikit-learn models keep what training learned in node attributes, not
    initializers: a retrained pipeline had 'structure: unchanged' and EQUAL."""
    a = save(rb.sklearn_pipeline()[0], tmp_path / "v1.onnx")
    b = save(rb.sklearn_pipeline(c=0.01, rows=30)[0], tmp_path / "v2.onnx")
    r = modelforge.diff_models(a, b)
    assert r.weights["nodes"] == ["Scaler", "LinearClassifier"]
    res = invoke("models", "diff", a, b)
    assert "weights: 2 node(s) have other attributes (Scaler, LinearClassifier)" in res.stdout
    assert res.exit_code == 0 and "2 node(s) have other values in B" in res.stderr


# -- validate: a traced model that only runs at the traced sizes -----------------------------
def test_validate_smoke_failure_names_the_synthesized_dims(tmp_path):
    path = save(rb.traced_seq(7), tmp_path / "encoder.onnx")
    res = invoke("validate", path)
    assert res.exit_code == 9
    assert "(symbolic dims synthesized as batch=1, seq=1)" in res.stdout
    assert "--dim batch=N --dim seq=N" in res.stderr
    res = invoke("validate", path, "--dim", "seq=7", "--dim", "batch=2")
    assert res.exit_code == 0, res.stdout


def test_bench_failure_names_the_synthesized_dims(tmp_path):
    path = save(rb.traced_seq(7), tmp_path / "encoder.onnx")
    res = invoke("bench", path, "--runs", "2", "--rounds", "1", "--batch-sizes", "1")
    assert res.exit_code == 7 and "(symbolic dims synthesized as seq=1)" in res.stderr
    assert "--dim seq=N" in res.stderr
    res = invoke("bench", path, "--runs", "2", "--rounds", "1", "--batch-sizes", "2", "--dim",
                 "seq=7", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr


# -- predict: --keep on a scikit-learn pipeline's feature column -----------------------------
def test_keep_of_an_input_column_says_why_it_is_not_fed(tmp_path):
    model, frame = rb.sklearn_pipeline()
    path = save(model, tmp_path / "pipe.onnx")
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    res = invoke("predict", path, csv, "--keep", "city")
    assert res.exit_code == 5 and res.stdout == ""
    assert "city" in res.stderr and "--keep columns are never fed" in res.stderr
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(csv, index=False)
    res = invoke("predict", path, csv, "--keep", "id")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("id,output_label,output_probability_0")
    session = ort.InferenceSession(model.SerializeToString())
    feeds = {
        "city": frame[["city"]].to_numpy().astype(str),
        "plan": frame[["plan"]].to_numpy().astype(str),
        "age": frame[["age"]].to_numpy(np.float32),
        "income": frame[["income"]].to_numpy(np.float32),
    }
    labels = session.run(["output_label"], feeds)[0]
    assert [int(line.split(",")[1]) for line in lines[1:]] == labels.tolist()


@pytest.mark.parametrize("opset", [18, 21])
def test_convert_upgrade_of_the_cnn_keeps_outputs(tmp_path, opset):
    src = save(rb.small_cnn(), tmp_path / "cnn.onnx")
    out = tmp_path / f"cnn{opset}.onnx"
    res = invoke("convert", src, "--opset", opset, "-o", out, "--json")
    assert res.exit_code == 0, res.stdout
    parity = json.loads(res.stdout)["result"]["parity"]
    assert parity and all(p["ok"] for p in parity)


def test_validate_shows_dims_shape_inference_invented_as_unknown(tmp_path):
    """skl2onnx declares output_label [None]; onnx's shape inference calls such dims
    unk__0, unk__1..., which validate showed as if the model named them."""
    model, _ = rb.sklearn_pipeline()
    path = save(model, tmp_path / "pipe.onnx")
    report = modelforge.validate_model(path)
    shapes = next(c for c in report.checks if c.name == "shapes")
    assert "unk__" not in shapes.message and "output_label: tensor(int64) [?]" in shapes.message
    assert "unk__" not in json.dumps(report.to_dict()["inferred_outputs"])


def test_validate_warns_when_a_fixed_output_dim_is_not_what_the_model_computes(tmp_path):
    path = save(rb.topk_declared_five(), tmp_path / "topk.onnx")
    res = invoke("validate", path, "--dim", "N=3")
    assert res.exit_code == 0, res.stdout
    assert "output 'values' is [3, 0], declared [N, 5]" in res.stdout  # k synthesized as 0
    assert "WARN  smoke" in res.stdout
    assert invoke("validate", path, "--strict").exit_code == 9
    healthy = save(rb.small_cnn(), tmp_path / "cnn.onnx")
    res = invoke("validate", healthy, "--dim", "batch=3")
    assert res.exit_code == 0 and "WARN" not in res.stdout


def test_predict_a_tf2onnx_model_from_npz_with_tensorflow_names(tmp_path):
    """NPZ members named after the TF inputs ('input_1:0.npy') were refused as unsafe, and
    the unk__12 / unk__14 batch dims sent the model to one whole-tensor run."""
    model = rb.keras_two_inputs()
    path = save(model, tmp_path / "keras.onnx")
    rng = np.random.default_rng(0)
    feeds = {
        "input_1:0": rng.normal(size=(25, 4)).astype(np.float32),
        "input_2:0": rng.normal(size=(25, 3)).astype(np.float32),
    }
    data = tmp_path / "rows.npz"
    np.savez(data, **feeds)
    res = invoke("predict", path, data, "--explain", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["result"]["data"]["mode"] == "rows"
    out = tmp_path / "out.npz"
    res = invoke("predict", path, data, "-o", out, "--batch-size", "10")
    assert res.exit_code == 0, res.stderr
    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    assert np.allclose(np.load(out)["dense/Softmax:0"], want, rtol=1e-6)


def test_npz_member_with_a_drive_letter_is_still_refused(tmp_path):
    import zipfile

    bad = tmp_path / "bad.npz"
    buf = tmp_path / "x.npy"
    np.save(buf, np.ones(2))
    with zipfile.ZipFile(bad, "w") as zf:
        zf.write(buf, "C:x.npy")
    from modelforge.data import npy
    from modelforge.errors import DataError

    with pytest.raises(DataError) as info:
        npy.load_npz(str(bad), "bad.npz")
    assert info.value.code == "unsafe_npz_member"


def test_a_csv_for_an_image_model_says_to_use_arrays(tmp_path):
    """768 pixel columns for a CNN: the hint said 'pass --columns', which then failed
    with 'can only feed a 2-D input'."""
    path = save(rb.small_cnn(), tmp_path / "cnn.onnx")
    csv = tmp_path / "pixels.csv"
    header = ",".join(f"p{i}" for i in range(192))
    csv.write_text(header + "\n" + ",".join(["0.5"] * 192) + "\n")
    res = invoke("predict", path, csv)
    assert res.exit_code == 5 and res.stdout == ""
    assert "input 'image' is float32 [batch, 3, 8, 8] (4-D)" in res.stderr
    assert "NPY or NPZ" in res.stderr and "--columns" not in res.stderr


def test_synthesized_attention_masks_are_ones(tmp_path):
    """A random integer attention_mask of one token is 0 a quarter of the time: an
    all-padding row, NaN from a healthy transformer, and a nan_or_inf warning."""
    from modelforge.model.synth import synthesize_inputs

    model = rb.masked_softmax()
    schema = extract_schema(model)
    for seed in range(8):
        feeds = synthesize_inputs(schema, {"seq": 3}, seed=seed)
        assert feeds["attention_mask"].tolist() == [[1, 1, 1]]
        assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < 4
    path = save(model, tmp_path / "attention.onnx")
    for seq in ("1", "2", "5"):
        res = invoke("validate", path, "--dim", f"seq={seq}", "--strict")
        assert res.exit_code == 0, res.stdout


def test_a_bert_export_with_two_token_types_validates_benches_and_batches(tmp_path):
    """token_type_ids index a 2-row table: synthesized ids in [0, 4) failed Gather, so a
    healthy BERT export failed validate (and models add), bench, and serve's probe."""
    from modelforge.model.synth import synthesize_inputs

    model = rb.bert_embeddings()
    schema = extract_schema(model)
    assert schema.index_bounds == {"input_ids": 100, "token_type_ids": 2}
    feeds = synthesize_inputs(schema, {"sequence": 64})
    assert set(np.unique(feeds["token_type_ids"])) == {0, 1}
    assert feeds["input_ids"].max() == 3 and feeds["attention_mask"].min() == 1
    path = save(model, tmp_path / "bert.onnx")
    for seq in ("1", "8", "32"):
        res = invoke("validate", path, "--dim", f"sequence={seq}", "--reference", "--strict")
        assert res.exit_code == 0, res.stdout
    assert invoke("models", "add", path, "--name", "bert").exit_code == 0
    res = invoke("bench", "bert", "--runs", "2", "--rounds", "1", "--batch-sizes", "1,8")
    assert res.exit_code == 0, res.stderr
    server = start_server([str(path)])
    try:
        assert server.info["models"][0]["batching"] == [1], server.stderr()
        assert "failed" not in server.stderr()
    finally:
        assert server.stop() == 0


def test_dims_named_by_an_expression_get_its_value(tmp_path):
    """Hugging Face KV-cache exports name the mask length 'past_sequence_length +
    sequence_length': synthesized as 1, the smoke run, serve's warm-up and bench fed a
    one-token mask next to a longer cache (hidden by broadcasting, not a realistic run)."""
    from modelforge.model.synth import dim_value, synthesize_inputs

    model = rb.decoder_with_cache()
    feeds = synthesize_inputs(
        extract_schema(model), {"sequence_length": 3, "past_sequence_length": 5}
    )
    assert feeds["attention_mask"].shape == (1, 8) and feeds["past_key"].shape == (1, 2, 5, 4)
    assert dim_value("past_sequence_length + 1", {}) == 2
    assert dim_value("2*n - 1", {"n": 4}) == 7 and dim_value("n+", {"n": 4}) == 1
    path = save(model, tmp_path / "decoder.onnx")
    res = invoke("validate", path, "--dim", "sequence_length=3", "--dim",
                 "past_sequence_length=5", "--reference", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stdout
    smoke = next(c for c in json.loads(res.stdout)["result"]["checks"] if c["name"] == "smoke")
    assert smoke["details"]["outputs"][0]["shape"] == [1, 2, 3, 8]


def test_default_sklearn_onehot_pipelines_validate_and_serve(tmp_path):
    """OneHotEncoder() (handle_unknown='error') becomes an ONNX OneHotEncoder with zeros=0:
    synthesized strings 'a' and integers 0-3 are unknown categories, so validate failed
    (and models add refused) the most common scikit-learn pipeline."""
    from modelforge.model.synth import synthesize_inputs

    strings, codes = rb.sklearn_default_onehot()
    assert extract_schema(codes).categories == {"X": {0: [10, 20, 30], 1: [1, 2]}}
    feeds = synthesize_inputs(extract_schema(codes), {}, batch=50)
    assert set(feeds["X"][:, 0]) <= {10, 20, 30} and set(feeds["X"][:, 1]) <= {1, 2}
    feeds = synthesize_inputs(extract_schema(strings), {}, batch=50)
    assert set(feeds["city"].ravel()) == {"oslo", "paris", "rome"}
    paths = [save(m, tmp_path / f"{n}.onnx") for n, m in (("strings", strings), ("codes", codes))]
    for path in paths:
        for n in ("1", "9"):
            res = invoke("validate", path, "--dim", f"N={n}")
            assert res.exit_code == 0, res.stdout
        assert invoke("models", "add", path, "--name", path.stem).exit_code == 0
        res = invoke("bench", path.stem, "--runs", "2", "--rounds", "1", "--batch-sizes", "1,8")
        assert res.exit_code == 0, res.stderr
    server = start_server([str(p) for p in paths])
    try:
        assert [m["batching"] for m in server.info["models"]] == [[1], [1]], server.stderr()
        assert "failed" not in server.stderr()
    finally:
        assert server.stop() == 0
