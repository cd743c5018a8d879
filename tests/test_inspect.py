"""inspect: fast summary without onnxruntime; escaping; IR 3 overridable initializers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from onnx import helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.model.inspect import inspect_model
from tests import model_zoo as zoo
from tests.builders import linear, save, with_external_data

runner = CliRunner()


def test_core_fields(tmp_path):
    model = linear()
    helper.set_model_props(model, {"author": "me", "task": "regression"})
    model.doc_string = "a linear model"
    r = inspect_model(save(model, tmp_path / "m.onnx"))
    assert r.ir_version == 8 and r.opset_import == {"ai.onnx": 17}
    assert r.metadata_props == {"author": "me", "task": "regression"}
    assert r.inputs == [
        {"name": "x", "type": "tensor(float)", "dtype": "float32", "shape": ["N", 4]}
    ]
    assert r.initializers == {
        "count": 2,
        "parameters": 5,
        "by_dtype": {"float": {"count": 2, "bytes": 20}},
    }
    assert r.ops == {"ai.onnx": {"MatMul": 1, "Add": 1}}
    assert r.node_count == 2 and r.subgraph_count == 0 and r.function_count == 0
    assert len(r.sha256) == 64 and r.size == (tmp_path / "m.onnx").stat().st_size


def test_ir3_overridable_initializers(tmp_path):
    r = inspect_model(save(zoo.ir3_initializers_as_inputs(), tmp_path / "ir3.onnx"))
    assert [i["name"] for i in r.inputs] == ["x"]
    assert [i["name"] for i in r.overridable_initializers] == ["W", "B"]
    result = runner.invoke(app, ["inspect", str(tmp_path / "ir3.onnx")])
    assert result.exit_code == 0
    assert "overridable initializers" in result.stdout


def test_external_data_custom_domain_and_subgraphs(tmp_path):
    r = inspect_model(with_external_data(tmp_path / "ext"))
    assert r.external_data == [{"location": "weights.bin", "size": 40, "tensors": 2}]
    c = inspect_model(save(zoo.custom_domain(), tmp_path / "c.onnx"))
    assert c.custom_domains == ["com.example"]
    assert c.ops["com.example"] == {"FancyOp": 1}
    n = inspect_model(save(zoo.nested_ifs(3), tmp_path / "n.onnx"))
    assert n.subgraph_count == 6 and n.ops["ai.onnx"]["If"] == 3 and n.node_count == 7


def test_zipmap_types(tmp_path):
    r = inspect_model(zoo.zipmap_classifier(tmp_path / "clf.onnx"))
    types = {o["name"]: o["type"] for o in r.outputs}
    assert types["output_probability"] == "seq(map(int64,tensor(float)))"
    assert "ai.onnx.ml" in r.opset_import


def test_hostile_text_is_escaped_in_human_output(tmp_path):
    model = linear()
    model.doc_string = "evil\x1b[31mRED\nsecond line"
    helper.set_model_props(model, {"k\x1b]0;title\x07": "v" * 500})
    path = save(model, tmp_path / "evil.onnx")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "evil\\x1b[31mRED\\nsecond line" in result.stdout
    assert "v" * 300 not in result.stdout  # truncated for humans
    env = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).stdout)
    assert env["result"]["metadata_props"]["k\x1b]0;title\x07"] == "v" * 500  # complete


def test_cli_errors(tmp_path):
    (tmp_path / "t.onnx").write_text("ir_version: 8\ngraph { }\n")
    result = runner.invoke(app, ["inspect", str(tmp_path / "t.onnx")])
    assert result.exit_code == 4
    assert "text-format protobuf" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.onnx"), "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["error"]["code"] == "file_not_found"


@pytest.mark.timeout(60)
def test_inspect_never_imports_onnxruntime(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    code = (
        "import sys\n"
        "from modelforge.model.inspect import inspect_model\n"
        f"inspect_model({str(path)!r})\n"
        "bad = [m for m in ('onnxruntime', 'pandas', 'polars') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_store_reference(tmp_path):
    src = with_external_data(tmp_path / "src")
    assert runner.invoke(app, ["models", "add", str(src), "--name", "ext"]).exit_code == 0
    r = inspect_model("ext")
    assert r.ref == "ext:1" and r.path.endswith("model.onnx")
    assert r.external_data_error is None and r.external_data[0]["size"] == 40
    result = runner.invoke(app, ["inspect", "ext:1"])
    assert result.exit_code == 0 and "model      ext:1" in result.stdout
