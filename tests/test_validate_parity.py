"""validate's parity check and parse messages, from issue 11: golden rows on fixed-batch
models, onnx.reference disagreeing with onnxruntime, complete "cannot run" notes, files
given in the wrong place, and our own bugs surfacing as bugs instead of failed checks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.model.checks import runner as check_runner
from modelforge.model.validate import ValidateOptions, validate_model
from tests import model_zoo as zoo
from tests.builders import linear, save

runner = CliRunner()


def _golden(tmp_path, model, x):
    from onnx.reference import ReferenceEvaluator

    (y,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.savez(tmp_path / "in.npz", x=x)
    np.savez(tmp_path / "out.npz", y=y)
    return str(tmp_path / "in.npz"), str(tmp_path / "out.npz")


def test_golden_rows_run_in_batches_a_fixed_batch_model_accepts(tmp_path):
    """Issue 11 #9: 37 golden rows on a batch-1 model failed with raw onnxruntime text."""
    model = linear(batch=1)
    path = save(model, tmp_path / "b1.onnx")
    x = np.random.default_rng(0).normal(size=(37, 4)).astype(np.float32)
    dynamic = linear()  # same weights, symbolic batch: computes the golden outputs
    inputs, expected = _golden(tmp_path, dynamic, x)
    report = validate_model(path, ValidateOptions(inputs=inputs, expected=expected))
    parity = report.check("parity")
    assert (parity.status, parity.code) == ("pass", "ok"), parity
    assert parity.details["outputs"][0]["ok"]
    np.savez(tmp_path / "bad.npz", y=np.zeros((37, 1), np.float32))
    bad = validate_model(path, ValidateOptions(inputs=inputs, expected=str(tmp_path / "bad.npz")))
    assert bad.check("parity").code == "parity_mismatch"
    assert "Got invalid dimensions" not in bad.check("parity").message


def _old_broadcast_add(tmp_path):
    """Add at opset 6 with the legacy broadcast=1, axis=0 attributes: onnx.reference ignores
    them (numpy broadcasting adds B along the last axis), onnxruntime runs the model after
    the in-memory upgrade, which translates the attributes correctly."""
    b = numpy_helper.from_array(np.array([1.0, 10.0, 100.0], np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "B"], ["y"], broadcast=1, axis=0)],
        "legacy_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])],
        initializer=[b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 7
    path = save(model, tmp_path / "add6.onnx")
    x = np.zeros((3, 3), np.float32)
    right = np.repeat(np.array([[1.0], [10.0], [100.0]], np.float32), 3, axis=1)
    np.savez(tmp_path / "in.npz", x=x)
    np.savez(tmp_path / "out.npz", y=right)
    return path, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")


def test_reference_disagreement_says_which_one_matches_expected(tmp_path):
    path, inputs, expected = _old_broadcast_add(tmp_path)
    report = validate_model(path, ValidateOptions(reference=True, inputs=inputs, expected=expected))
    parity = report.check("parity")
    assert (parity.status, parity.code) == ("warn", "reference_disagrees"), parity
    assert "onnxruntime and onnx.reference disagree on output 'y'" in parity.message
    assert "onnxruntime matches the --expected outputs" in parity.message
    assert "onnx.reference does not" in parity.message
    assert "conversion changed" not in parity.message + (parity.hint or "")
    assert report.ok  # a warning: the golden comparison passed
    assert all(r["ok"] for r in parity.details["outputs"] if r["against"] == "expected")
    assert not parity.details["reference_vs_expected"][0]["ok"]


def test_reference_disagreement_without_golden_outputs_does_not_blame_the_conversion(tmp_path):
    path, _, _ = _old_broadcast_add(tmp_path)
    r = runner.invoke(app, ["validate", str(path), "--reference", "--json"])
    assert r.exit_code == 9
    checks = json.loads(r.stdout)["result"]["checks"]
    parity = next(c for c in checks if c["name"] == "parity")
    assert (parity["status"], parity["code"]) == ("fail", "parity_mismatch")
    assert "disagree" in parity["message"] and "cannot tell which one is right" in parity["message"]
    assert "conversion changed" not in parity["message"] + parity["hint"]
    assert "--inputs/--expected" in parity["hint"]


def test_golden_mismatch_is_blamed_on_the_model_not_the_reference(tmp_path):
    path, inputs, _ = _old_broadcast_add(tmp_path)
    np.savez(tmp_path / "wrong.npz", y=np.full((3, 3), 7.0, np.float32))
    report = validate_model(
        path, ValidateOptions(reference=True, inputs=inputs, expected=str(tmp_path / "wrong.npz"))
    )
    parity = report.check("parity")
    assert (parity.status, parity.code) == ("fail", "parity_mismatch")
    assert "differs from the expected outputs" in parity.message


def test_reference_cannot_run_note_is_a_complete_sentence(tmp_path):
    path = zoo.zipmap_classifier(tmp_path / "zipmap.onnx")
    report = validate_model(path, ValidateOptions(reference=True))
    parity = report.check("parity")
    assert (parity.status, parity.code) == ("warn", "parity_not_compared")
    note = parity.details["notes"][0]
    assert note == (
        "onnx.reference has no implementation of ai.onnx.ml operator 'ZipMap', "
        "so it cannot run this model"
    )
    assert not note.endswith(" in")


@pytest.mark.parametrize(
    "content,what",
    [
        ("sepal_length,sepal_width\n5.1,3.5\n", "CSV/text"),
        ("a\tb\n1\t2\n", "CSV/text"),
        ("just some notes\nline two\n", "text"),
    ],
)
def test_a_text_file_given_as_the_model_says_so(tmp_path, content, what):
    """Issue 11 #11: 'predict data.csv model.onnx' blamed a corrupt download."""
    data = tmp_path / "data.csv"
    data.write_text(content)
    save(linear(), tmp_path / "model.onnx")
    for argv in (
        ["predict", str(data), str(tmp_path / "model.onnx")],
        ["inspect", str(data)],
    ):
        r = runner.invoke(app, argv)
        assert r.exit_code == 4, (argv, r.stderr)
        assert f"looks like a {what} file, not an ONNX model" in r.stderr
        assert "predict takes the model first: modelforge predict MODEL DATA" in r.stderr
        assert "re-download" not in r.stderr
    v = validate_model(data)
    assert (v.check("parse").status, v.check("parse").code) == ("fail", "not_onnx")


def test_binary_models_are_never_taken_for_text(tmp_path):
    from modelforge.model.load import looks_like_text

    for model in (linear(), zoo.ir3_initializers_as_inputs(), zoo.nested_ifs(3)):
        assert looks_like_text(model.SerializeToString()) is None
    assert looks_like_text("naïve,ü\n1,2\n".encode()) == "a CSV/text file"


def test_nesting_depth_is_measured_when_protobuf_refuses(tmp_path):
    """protobuf 6 no longer says why it refused deep nesting: the depth is measured."""
    from modelforge.model.load import PROTOBUF_DEPTH_LIMIT, message_depth
    from tests.hostile.corpus import deep_nesting

    data = deep_nesting("If", 40)
    depth = message_depth(data, onnx.ModelProto.DESCRIPTOR)
    assert depth is not None and depth > PROTOBUF_DEPTH_LIMIT
    shallow = message_depth(linear().SerializeToString(), onnx.ModelProto.DESCRIPTOR)
    assert shallow is not None and shallow < 10
    assert message_depth(data[: len(data) // 2], onnx.ModelProto.DESCRIPTOR) is None
    (tmp_path / "deep.onnx").write_bytes(data)
    report = validate_model(tmp_path / "deep.onnx")
    assert report.check("parse").code == "nesting_too_deep"


def test_a_bug_in_a_check_is_not_a_failed_check():
    """Our own exceptions must surface as bugs (exit 1), not as 'onnx could not process'."""

    def buggy():
        return {}["missing"]

    try:
        buggy()
    except KeyError as exc:
        assert not check_runner.raised_by_dependency(exc)
    try:
        onnx.checker.check_model(onnx.ModelProto())
    except onnx.checker.ValidationError as exc:
        assert check_runner.raised_by_dependency(exc)


_BUG_SCRIPT = """
import json, sys
from modelforge.model.checks import runner as check_runner

def _bug(ctx):
    return {}["no such key"]  # a bug in ModelForge, not a problem of the model

check_runner.CHECKS["shapes"] = _bug  # the guarded child is forked from this process
from typer.testing import CliRunner
from modelforge.cli.app import app
r = CliRunner().invoke(app, ["validate", sys.argv[1]])
print(json.dumps({"code": r.exit_code, "stderr": r.stderr}))
"""


@pytest.mark.timeout(120)
def test_a_bug_inside_validate_exits_1(tmp_path):
    import subprocess
    import sys

    path = save(linear(), tmp_path / "m.onnx")
    out = subprocess.run(
        [sys.executable, "-c", _BUG_SCRIPT, str(path)],
        capture_output=True, text=True, timeout=100, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 1, result
    assert "KeyError" in result["stderr"] and "check_error" not in result["stderr"]
