"""``models diff`` / ``diff_models``: structure and behaviour of real models compared
(scikit-learn through skl2onnx, an MLP built with onnx.helper, schema variants)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

import modelforge
from modelforge.cli.app import app
from modelforge.diff.core import DiffResult
from modelforge.errors import DataError, UsageError
from tests import golden_builders as gb
from tests.predict_builders import IRIS_NAMES

runner = CliRunner()
F, D, I64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _prod(tmp_path, **kw):
    """iris:1 (alias prod) with golden examples from the iris CSV."""
    model = gb.logreg(tmp_path / "prod.onnx", **kw)
    data = gb.iris_csv(tmp_path / "iris.csv")
    modelforge.add_model(model, "iris", aliases=["prod"], example=data, columns=IRIS_NAMES)
    return data


def test_retrained_and_reexported_with_other_bytes_diffs_as_equal(tmp_path):
    _prod(tmp_path)
    new = gb.logreg(tmp_path / "new.onnx", metadata={"trained_at": "2026-12-01"})
    assert new.read_bytes() != (tmp_path / "prod.onnx").read_bytes()
    r = modelforge.diff_models("iris:prod", new)
    assert r.equal and r.schema_changes == [] and r.rows_compared == 150
    assert r.behaviour["source"] == "examples:A"
    assert r.structure_changes == ["metadata_props"]
    assert r.metadata_props["added"] == {"trained_at": "2026-12-01"}
    assert r.outputs["output_label"]["changed_fraction"] == 0.0
    assert r.outputs["output_probability"]["max_abs_diff"] == 0.0
    res = invoke("models", "diff", "iris:prod", new)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "EQUAL" and res.stderr == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.equal = False  # type: ignore[misc]
    # re-exported for another opset: the structure says so, the behaviour is the same
    other = gb.logreg(tmp_path / "opset15.onnx", opset=15)
    r = modelforge.diff_models("iris:prod", other)
    assert r.equal and r.opsets["changed"] == {"ai.onnx": [17, 15]}
    assert "opsets" in r.structure_changes


def test_other_regularisation_flips_labels_and_drifts_probabilities(tmp_path):
    _prod(tmp_path)
    new = gb.logreg(tmp_path / "new.onnx", C=0.01)
    r = modelforge.diff_models("iris:prod", new)
    assert not r.equal and r.differences == {"schema": False, "outputs": True, "labels": True}
    label = r.outputs["output_label"]
    assert label["kind"] == "label" and 0 < label["changed_fraction"] < 0.5
    flipped = label["worst_rows"][0]
    assert flipped["a"] != flipped["b"] and isinstance(flipped["row"], int)
    probs = r.outputs["output_probability"]
    assert probs["kind"] == "zipmap" and set(probs["classes"]) == {
        "setosa",
        "versicolor",
        "virginica",
    }
    assert probs["max_abs_diff"] > 0.1 and probs["mismatch_fraction"] > 0.5
    assert probs["classes"]["setosa"]["max_abs_diff"] <= probs["max_abs_diff"]
    res = invoke("models", "diff", "iris:prod", new)
    assert res.exit_code == 9
    assert "DIFFERENT: outputs, labels" in res.stdout and "models differ" in res.stderr
    res = invoke("models", "diff", "iris:prod", new, "--fail-on", "schema")
    assert res.exit_code == 0 and "EQUAL (ignored: outputs, labels)" in res.stdout
    loose = modelforge.diff_models("iris:prod", new, atol=1.0, fail_on="outputs")
    assert loose.equal and loose.differences["labels"]


def test_json_envelope_has_the_stable_keys(tmp_path):
    _prod(tmp_path)
    new = gb.logreg(tmp_path / "new.onnx", C=0.01)
    res = invoke("models", "diff", "iris:prod", new, "--json")
    assert res.exit_code == 9
    env = json.loads(res.stdout)
    assert env["status"] == "error" and env["error"]["code"] == "models_differ"
    assert env["error"]["exit_code"] == 9
    result = env["result"]
    for key in ("equal", "schema_changes", "opsets", "ops", "outputs", "rows_compared"):
        assert key in result
    assert result["equal"] is False and result["rows_compared"] == 150
    for rec in result["outputs"].values():
        for key in ("max_abs_diff", "max_rel_diff", "mean_abs_diff", "mismatch_fraction",
                    "changed_fraction", "worst_rows"):  # fmt: skip
            assert key in rec
    assert DiffResult.from_dict(result).to_dict() == result
    res = invoke("models", "diff", "iris:prod", tmp_path / "prod.onnx", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["result"]["equal"] is True


def test_mlp_with_one_layer_changed(tmp_path):
    a = gb.mlp(tmp_path / "a.onnx")
    b = gb.mlp(tmp_path / "b.onnx", scale_layer2=1.05)
    np.savez(tmp_path / "x.npz", X=gb.mlp_rows(64))
    modelforge.add_model(a, "mlp", example=tmp_path / "x.npz")
    r = modelforge.diff_models("mlp", b)
    assert r.schema_changes == [] and r.ops["delta"] == {}
    assert r.parameters["delta"] == {"tensors": 0, "count": 0, "bytes": 0}
    logits = r.outputs["logits"]
    assert logits["kind"] == "float" and logits["max_abs_diff"] > 1e-3
    assert 0 < logits["max_rel_diff"] <= 2 and logits["mismatch_fraction"] > 0.5
    worst = logits["worst_rows"]
    assert [w["abs_diff"] for w in worst] == sorted((w["abs_diff"] for w in worst), reverse=True)
    assert r.differences["outputs"]
    wider = gb.mlp(tmp_path / "c.onnx", hidden=16, opset=18)
    r = modelforge.diff_models("mlp", wider)
    assert r.parameters["delta"]["count"] == (4 * 8 + 8 + 8 * 3)  # 4x16+16+16x3 - 4x8-8-8x3
    assert r.parameters["delta"]["bytes"] == 4 * r.parameters["delta"]["count"]
    assert r.opsets["changed"] == {"ai.onnx": [17, 18]}
    assert set(r.structure_changes) == {"opsets", "parameters", "weights"}
    res = invoke("models", "diff", "mlp", wider)
    assert "opset ai.onnx 17 -> 18" in res.stdout and "parameters 67 -> 131 (+64)" in res.stdout


X4 = ("x", F, ["N", 4])


@pytest.mark.parametrize(
    "a_io, b_io, expected",
    [
        (([X4], [("y", F, ["N", 4])]), ([X4, ("z", F, ["N", 2])], [("y", F, ["N", 4])]),
         [("input_added", "z")]),
        (([X4, ("z", F, ["N", 2])], [("y", F, ["N", 4])]), ([X4], [("y", F, ["N", 4])]),
         [("input_removed", "z")]),
        (([X4], [("y", F, ["N", 4])]), ([("features", F, ["N", 4])], [("y", F, ["N", 4])]),
         [("input_renamed", "x")]),
        (([X4], [("y", F, ["N", 4])]), ([("x", D, ["N", 4])], [("y", F, ["N", 4])]),
         [("input_dtype_changed", "x")]),
        (([X4], [("y", F, ["N", 4])]), ([("x", F, [1, 4])], [("y", F, ["N", 4])]),
         [("input_shape_changed", "x")]),
        (([X4], [("y", F, ["N", 4])]), ([("x", F, ["batch", 4])], [("y", F, ["N", 4])]), []),
        (([X4], [("y", F, ["N", 4])]), ([X4], [("y", F, ["N", 4]), ("y2", F, ["N", 4])]),
         [("output_added", "y2")]),
        (([X4], [("y", F, ["N", 4]), ("y2", F, ["N", 4])]), ([X4], [("y", F, ["N", 4])]),
         [("output_removed", "y2")]),
        (([X4], [("y", F, ["N", 4])]), ([X4], [("score", F, ["N", 4])]),
         [("output_renamed", "y")]),
        (([X4], [("y", F, ["N", 4])]), ([X4], [("y", D, ["N", 4])]),
         [("output_dtype_changed", "y")]),
        (([X4], [("y", F, ["N", 4])]), ([X4], [("y", F, ["N", "M"])]),
         [("output_shape_changed", "y")]),
    ],
)  # fmt: skip
def test_schema_changes_of_each_kind(tmp_path, a_io, b_io, expected):
    a = gb.io_model(tmp_path / "a.onnx", *a_io)
    b = gb.io_model(tmp_path / "b.onnx", *b_io)
    r = modelforge.diff_models(a, b)
    assert [(c["kind"], c["name"]) for c in r.schema_changes] == expected
    assert r.equal == (not expected)
    assert r.behaviour["status"] == "skipped" and r.warnings  # no examples, no --data
    res = invoke("models", "diff", a, b)
    assert res.exit_code == (9 if expected else 0)
    assert "outputs not compared" in res.stderr
    if expected:
        assert f"{expected[0][0].split('_')[0]} " in res.stdout


def test_schema_change_details(tmp_path):
    a = gb.io_model(tmp_path / "a.onnx", [X4], [("y", F, ["N", 4])])
    b = gb.io_model(tmp_path / "b.onnx", [("x", F, [1, 4])], [("label", I64, ["N", 4])])
    r = modelforge.diff_models(a, b)
    by_kind = {c["kind"]: c for c in r.schema_changes}
    assert by_kind["input_shape_changed"]["a"] == ["N", 4]
    assert by_kind["input_shape_changed"]["b"] == [1, 4]
    assert (by_kind["output_renamed"]["a"], by_kind["output_renamed"]["b"]) == ("y", "label")
    assert by_kind["output_dtype_changed"]["b"] == "tensor(int64)"
    res = invoke("models", "diff", a, b)
    assert "input x: shape [N, 4] -> [1, 4]" in res.stdout
    assert "output renamed: y -> label" in res.stdout


def test_examples_that_cannot_feed_b_say_why_and_data_still_compares(tmp_path):
    a = gb.mlp(tmp_path / "a.onnx")
    np.savez(tmp_path / "x.npz", X=gb.mlp_rows(30))
    modelforge.add_model(a, "mlp", example=tmp_path / "x.npz")
    b = gb.mlp(tmp_path / "b.onnx", features=5)
    r = modelforge.diff_models("mlp", b)
    assert r.behaviour["status"] == "skipped" and r.outputs == {}
    assert r.behaviour["problems"] == [
        "B's input 'X' expects float32 [N, 5]; the examples hold float32 [30, 4]"
    ]
    assert "pass --data" in r.behaviour["reason"]
    assert r.differences == {"schema": True, "outputs": True, "labels": True}
    res = invoke("models", "diff", "mlp", b, "--fail-on", "outputs")
    assert res.exit_code == 9 and "cannot feed B" in res.stdout
    renamed = gb.mlp(tmp_path / "r.onnx", input_name="features")
    r = modelforge.diff_models("mlp", renamed)
    assert r.behaviour["problems"] == ["B's input 'features' is not in the examples (they hold X)"]
    # --data is mapped onto each model as predict maps it: both run, shared outputs compared
    cols = {f"f{i}": v.tolist() for i, v in enumerate(gb.mlp_rows(30, features=5).T)}
    data = gb.write_csv(tmp_path / "five.csv", cols)
    a5 = gb.mlp(tmp_path / "a5.onnx", features=5)
    modelforge.add_model(a5, "five", columns=[f"f{i}" for i in range(5)])
    r = modelforge.diff_models("five", b, data=data)
    assert r.behaviour["source"] == "data" and r.rows_compared == 30
    assert r.equal and r.outputs["label"]["changed_fraction"] == 0.0
    with pytest.raises(DataError) as err:  # 5 columns do not fit A's [N, 4]: a data error
        modelforge.diff_models("mlp", b, data=data)
    assert err.value.message.startswith("--data cannot be mapped onto A (mlp:1): ")
    res = invoke("models", "diff", "mlp", b, "--data", data)
    assert res.exit_code == 5 and "cannot be mapped onto A" in res.stderr and res.stdout == ""


def test_string_labels_and_zipmap_class_changes(tmp_path):
    _prod(tmp_path)
    ints = gb.logreg(tmp_path / "ints.onnx", int_labels=True)
    r = modelforge.diff_models("iris:prod", ints)
    kinds = {c["kind"] for c in r.schema_changes}
    assert "output_dtype_changed" in kinds  # tensor(string) -> tensor(int64)
    probs = r.outputs["output_probability"]
    assert probs["classes_removed"] == ["setosa", "versicolor", "virginica"]
    assert probs["classes_added"] == ["0", "1", "2"] and probs["differs"]
    assert r.outputs["output_label"]["changed_fraction"] == 1.0
    res = invoke("models", "diff", "iris:prod", ints)
    assert "classes +0,1,2" in res.stdout


def test_bad_options_and_references(tmp_path):
    a = gb.mlp(tmp_path / "a.onnx")
    with pytest.raises(UsageError):
        modelforge.diff_models(a, a, fail_on="labels,colours")
    res = invoke("models", "diff", a, a, "--fail-on", "colours")
    assert res.exit_code == 2 and "schema, outputs, labels" in res.stderr and res.stdout == ""
    res = invoke("models", "diff", a, a, "--rtol", "-1")
    assert res.exit_code == 2
    res = invoke("models", "diff", a, "nosuchmodel", "--json")
    assert res.exit_code == 3 and json.loads(res.stdout)["status"] == "error"
    res = invoke("models", "diff", a, tmp_path / "missing.onnx")
    assert res.exit_code == 3 and "missing.onnx" in res.stderr


def test_ci_recipe_from_docs(tmp_path):
    """docs/diff.md's CI gate: a retrained candidate passes, a label-flipping one fails."""
    data = gb.iris_csv(tmp_path / "holdout.csv")
    prod = gb.logreg(tmp_path / "prod.onnx")
    cols = ",".join(IRIS_NAMES)
    add = ("models", "add", "--name", "churn", "--columns", cols, "--example", data)
    assert invoke(*add[:2], prod, *add[2:], "--alias", "prod").exit_code == 0
    for candidate, expected in ((gb.logreg(tmp_path / "same.onnx", metadata={"b": "2"}), 0),
                                (gb.logreg(tmp_path / "flip.onnx", C=0.01), 9)):  # fmt: skip
        assert invoke(*add[:2], candidate, *add[2:]).exit_code == 0
        assert invoke("validate", "churn").exit_code == 0
        res = invoke("models", "diff", "churn:prod", "churn", "--fail-on", "labels", "--json")
        assert res.exit_code == expected, res.stdout
        env = json.loads(res.stdout)
        assert env["result"]["differences"]["labels"] is (expected == 9)


def test_zipmap_and_plain_outputs_renamed_by_position_are_compared(tmp_path):
    """skl2onnx ZipMap (output_label/output_probability) vs zipmap=False (label/probabilities):
    paired by position, the [N, 3] tensor compared with the ZipMap per class."""
    _prod(tmp_path)
    plain = gb.logreg(tmp_path / "plain.onnx", zipmap=False)
    r = modelforge.diff_models("iris:prod", plain, fail_on="labels,outputs")
    assert set(r.outputs) == {"output_label -> label", "output_probability -> probabilities"}
    labels = r.outputs["output_label -> label"]
    assert labels["compared_with"] == "label" and labels["changed_fraction"] == 0.0
    probs = r.outputs["output_probability -> probabilities"]
    assert probs["kind"] == "zipmap" and probs["comparable"] and probs["max_abs_diff"] < 1e-6
    assert r.equal and r.differences["schema"]
    res = invoke("models", "diff", "iris:prod", plain, "--fail-on", "labels")
    assert res.exit_code == 0 and "output_label -> label" in res.stdout
    flipped = gb.logreg(tmp_path / "flip.onnx", C=0.01, zipmap=False)
    res = invoke("models", "diff", "iris:prod", flipped, "--fail-on", "labels", "--json")
    assert res.exit_code == 9
    out = json.loads(res.stdout)["result"]["outputs"]
    assert out["output_label -> label"]["changed_fraction"] > 0
    rows = [w["row"] for w in out["output_probability -> probabilities"]["worst_rows"]]
    assert rows and len(rows) == len(set(rows))  # one entry per row, not one per class


def test_outputs_that_cannot_be_compared_are_differences(tmp_path):
    x = [("x", F, ["N", 2])]
    a = gb.io_model(tmp_path / "a.onnx", x, [("y", F, ["N", 2]), ("z", I64, ["N", 2])])
    only_y = gb.io_model(tmp_path / "b.onnx", x, [("y", F, ["N", 2])])
    data = gb.write_csv(tmp_path / "d.csv", {"c0": [1.0, 2.0, 3.0], "c1": [4.0, 5.0, 6.0]})
    r = modelforge.diff_models(a, only_y, data=data, fail_on="labels")
    assert r.outputs["y"]["comparable"] and not r.outputs["y"]["differs"]
    z = r.outputs["z"]
    assert not z["comparable"] and z["kind"] == "label"
    assert z["reason"] == "B has no output 'z' nor a renamed one (B gives y)"
    assert not r.equal and r.differences["labels"] and not r.differences["outputs"]
    res = invoke("models", "diff", a, only_y, "--data", data, "--fail-on", "labels")
    assert res.exit_code == 9 and "output 'z' cannot be compared: B has no output" in res.stdout
    # renamed at the same position but incompatible values: compared, not comparable
    ints = gb.io_model(tmp_path / "c.onnx", x, [("q", I64, ["N", 2])])
    floats = gb.io_model(tmp_path / "d.onnx", x, [("p", F, ["N", 2])])
    r = modelforge.diff_models(floats, ints, data=data, fail_on="outputs")
    rec = r.outputs["p -> q"]
    assert not rec["comparable"] and rec["reason"] == "A gives float values, B gives label values"
    assert not r.equal and r.rows_compared == 3


def test_bad_value_in_data_is_a_data_error_not_a_difference(tmp_path):
    import polars as pl

    a = gb.mlp(tmp_path / "a.onnx")
    cols = {f"f{i}": v.tolist() for i, v in enumerate(gb.mlp_rows(20).T)}
    cols["f2"][11] = float("nan")
    data = tmp_path / "nan.parquet"
    pl.DataFrame(cols).write_parquet(data)
    with pytest.raises(DataError) as err:
        modelforge.diff_models(a, a, data=data)
    assert "nan.parquet" in err.value.message and "'f2'" in err.value.message
    res = invoke("models", "diff", a, a, "--data", data)
    assert res.exit_code == 5 and res.stdout == "" and "models differ" not in res.stderr
    res = invoke("models", "diff", a, a, "--data", data, "--allow-nan")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "EQUAL" in res.stdout


def test_text_report_details(tmp_path):
    _prod(tmp_path)
    bare = gb.io_model(tmp_path / "io.onnx", [("x", F, ["N", 4])], [("y", F, ["N", 4])])
    res = invoke("models", "diff", "iris:prod", bare, "--fail-on", "schema")
    assert "output removed: output_probability seq(map(string,tensor(float))) (no shape)" in (
        res.stdout
    )
    assert "None" not in res.stdout
    res = invoke("models", "diff", "--help")
    # metavars A and B (typer wraps every required argument in braces, app-wide)
    assert re.search(r"models diff \[OPTIONS\] \{?A\}? \{?B\}?\n", res.stdout), res.stdout
    assert "--allow-nan" in res.stdout


def test_an_explicit_output_gate_with_nothing_to_compare_is_refused(tmp_path):
    """`--fail-on labels` without --data or golden examples cannot check labels: exit 2,
    never a pass; the default gate (structure only, with a warning) and `--fail-on schema`
    still answer."""
    a = gb.io_model(tmp_path / "a.onnx", [X4], [("y", F, ["N", 4])])
    for kinds in ("labels", "outputs", "schema,labels"):
        res = invoke("models", "diff", a, a, "--fail-on", kinds, "--json")
        assert res.exit_code == 2, res.stderr
        error = json.loads(res.stdout)["error"]
        assert error["code"] == "outputs_not_compared" and "--data" in error["hint"]
    with pytest.raises(UsageError, match="outputs were not compared"):
        modelforge.diff_models(a, a, fail_on="labels")
    assert invoke("models", "diff", a, a, "--fail-on", "schema").exit_code == 0
    assert invoke("models", "diff", a, a).exit_code == 0
