"""Broken and hostile model files: validate reports the failing check, never crashes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.model.validate import validate_model
from tests.builders import linear, save

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


def _bytes(name, data):
    def make(folder):
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return make


def _model(name, edit):
    def make(folder):
        m = linear()
        edit(m)
        return save(m, folder / name)

    return make


GOOD = linear().SerializeToString()
CASES = [
    ("random", _bytes("r.onnx", bytes(range(256)) * 8), "parse", "parse_error"),
    ("truncated", _bytes("t.onnx", GOOD[: len(GOOD) // 2]), "parse", "parse_error"),
    (
        "tensorproto",
        _bytes(
            "tp.onnx", numpy_helper.from_array(np.ones((3, 3), np.float32), "t").SerializeToString()
        ),
        "parse",
        "not_onnx",
    ),
    ("text", _bytes("text.onnx", str(linear()).encode()), "parse", "not_onnx"),
    ("no graph", _model("ng.onnx", lambda m: m.ClearField("graph")), "parse", "no_graph"),
    ("ir 0", _model("ir0.onnx", lambda m: setattr(m, "ir_version", 0)), "parse", "bad_ir_version"),
    (
        "duplicate opset",
        _model("dup.onnx", lambda m: m.opset_import.append(helper.make_opsetid("", 13))),
        "parse",
        "duplicate_opset_import",
    ),
    (
        "no opset",
        _model("no.onnx", lambda m: m.ClearField("opset_import")),
        "parse",
        "no_opset_import",
    ),
    (
        "opset beyond onnxruntime",
        _model("o.onnx", lambda m: m.opset_import[0].__setattr__("version", 40)),
        "runtime_compat",
        "opset_too_new",
    ),
    (
        "ml opset beyond onnxruntime",
        _model("ml.onnx", lambda m: m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 99))),
        "runtime_compat",
        "opset_too_new",
    ),
    (
        "unknown op",
        _model("u.onnx", lambda m: setattr(m.graph.node[0], "op_type", "NoSuchOp")),
        "structure",
        "checker_failed",
    ),
]


@pytest.mark.parametrize(("label", "make", "check", "code"), CASES, ids=[c[0] for c in CASES])
def test_broken_models_fail_the_right_check(tmp_path, label, make, check, code):
    report = validate_model(make(tmp_path))
    failed = report.failed
    assert failed, label
    assert (failed[0].name, failed[0].code) == (check, code)
    assert not report.ok


def test_paths_that_are_not_files(tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    os.symlink("/dev/zero", tmp_path / "zero.onnx")
    for name in ("dir.onnx", "zero.onnx"):
        report = validate_model(tmp_path / name)
        assert report.check("file").code == "not_a_regular_file"


def test_escape_sequences_in_names_are_escaped_on_output(tmp_path):
    m = linear()
    m.graph.node[0].name = "n\x1b[2J"
    m.graph.node[0].input[1] = "gh\x1bost"
    path = save(m, tmp_path / "ansi.onnx")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 9
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert "gh\\x1bost" in result.stderr
    assert "Traceback" not in result.stderr
