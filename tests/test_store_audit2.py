"""Second fresh-eyes audit: defects found by following the docs and feeding hostile inputs to
validate, inspect, convert, bench, the store and diff. One test per defect fixed."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import InvalidModelError, UsageError
from modelforge.model.convert import convert_model
from tests.builders import linear, save

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _no_outputs() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# ---- validate ---------------------------------------------------------------------------------


def test_validate_model_without_outputs_fails_structure_not_smoke(tmp_path):
    path = save(_no_outputs(), tmp_path / "noout.onnx")
    result = _invoke("validate", str(path), "--json")
    assert result.exit_code == 9
    checks = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}
    assert checks["structure"]["status"] == "fail"
    assert checks["structure"]["code"] == "no_outputs"
    assert "declares no outputs" in checks["structure"]["message"]
    assert checks["smoke"]["status"] == "skip"


def test_validate_ir_newer_than_onnx_names_the_versions_not_the_converter(tmp_path):
    model = linear()
    model.ir_version = onnx.IR_VERSION + 80
    path = save(model, tmp_path / "future.onnx")
    result = _invoke("validate", str(path), "--json")
    assert result.exit_code == 9
    checks = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}
    structure = checks["structure"]
    assert structure["code"] == "ir_too_new"
    assert f"IR version {onnx.IR_VERSION + 80}" in structure["message"]
    assert "converter" not in structure["hint"] and "upgrade onnx" in structure["hint"]
    assert checks["runtime_compat"]["code"] == "ir_too_new"


# ---- convert ----------------------------------------------------------------------------------


def test_convert_below_an_ops_lowest_adapter_names_the_op_and_the_floor(tmp_path):
    src = save(linear(opset=17), tmp_path / "m.onnx")  # MatMul + Add: no adapters down to 7
    with pytest.raises(InvalidModelError) as err:
        convert_model(src, 7, tmp_path / "m7.onnx")
    found = re.search(r"no adapter that takes (MatMul|Add) below opset (\d+)$", err.value.message)
    assert found, err.value.message
    assert "Assertion" not in err.value.message and "$" not in err.value.message
    assert f"--opset {found.group(2)} or higher" in (err.value.hint or "")
    assert not (tmp_path / "m7.onnx").exists()


def test_convert_to_an_opset_onnx_does_not_know_is_a_usage_error(tmp_path):
    from onnx.defs import onnx_opset_version

    src = save(linear(), tmp_path / "m.onnx")
    out = tmp_path / "far.onnx"
    result = _invoke("convert", str(src), "--opset", str(onnx_opset_version() + 50), "-o", str(out))
    assert result.exit_code == 2
    assert f"ai.onnx opsets 1-{onnx_opset_version()}" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_convert_refuses_to_overwrite_the_inputs_external_data(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    # the input's data file is named exactly what the output's data file would be
    onnx.save(
        linear(), folder / "a.onnx", save_as_external_data=True, location="b.onnx.data",
        size_threshold=0,
    )  # fmt: skip
    before = (folder / "b.onnx.data").read_bytes()
    with pytest.raises(UsageError) as err:
        convert_model(folder / "a.onnx", 18, folder / "b.onnx")
    assert "input model's own external-data file" in err.value.message
    assert (folder / "b.onnx.data").read_bytes() == before
    assert not (folder / "b.onnx").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.onnx", "b.onnx.data"]
