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
        "bytes": 20,
        "by_dtype": {"float": {"count": 2, "bytes": 20}},
        "largest": [
            {"name": "W", "dtype": "float", "shape": [4, 1], "bytes": 16},
            {"name": "B", "dtype": "float", "shape": [1], "bytes": 4},
        ],
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
    import modelforge

    r = modelforge.inspect_model("ext")  # the public API resolves store references
    assert r.ref == "ext:1" and r.path.endswith("model.onnx")
    assert r.external_data_error is None and r.external_data[0]["size"] == 40
    result = runner.invoke(app, ["inspect", "ext:1"])
    assert result.exit_code == 0 and "model      ext:1" in result.stdout


def _many_initializers(n: int):
    """IR 3 style (like the model-zoo DenseNet): n initializers, each also a graph input."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    prev = "x"
    for i in range(n):
        w = numpy_helper.from_array(np.full((2 + (i % 7),), i, np.float32)[:2], f"w{i}")
        inits.append(w)
        inputs.append(helper.make_tensor_value_info(f"w{i}", TensorProto.FLOAT, [2]))
        nodes.append(helper.make_node("Add", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    big = numpy_helper.from_array(np.zeros((64, 2), np.float32), "big")
    inits.append(big)
    graph = helper.make_graph(
        nodes, "many", inputs, [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [2])],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    return model


def test_initializers_are_summarised_unless_full(tmp_path):
    """Issue 11 #12: inspect listed every initializer (880 lines for a DenseNet)."""
    path = save(_many_initializers(300), tmp_path / "many.onnx")
    r = inspect_model(path)
    init = r.initializers
    assert init["count"] == 301 and init["bytes"] == 300 * 8 + 64 * 2 * 4
    assert init["largest"][0] == {"name": "big", "dtype": "float", "shape": [64, 2], "bytes": 512}
    assert len(init["largest"]) == 5 and len(r.overridable_initializers) == 300
    short = runner.invoke(app, ["inspect", str(path)])
    assert short.exit_code == 0, short.stderr
    assert len(short.stdout.splitlines()) < 60
    assert "overridable initializers 300" in short.stdout and "--full" in short.stdout
    assert "largest  big" in short.stdout
    full = runner.invoke(app, ["inspect", str(path), "--full"])
    assert full.exit_code == 0
    assert all(f"w{i} " in full.stdout for i in (0, 150, 299))
    assert len(full.stdout.splitlines()) > 300


def test_opsets_read_in_one_order_everywhere(tmp_path):
    """Issue 11 #12: 'ai.onnx.ml 1, 21' or '21, ai.onnx.ml 1' depending on the file."""
    from modelforge.model.opset import format_opsets

    model = linear()
    del model.opset_import[:]
    model.opset_import.extend(
        [helper.make_opsetid("ai.onnx.ml", 1), helper.make_opsetid("com.x", 2),
         helper.make_opsetid("", 17)]
    )  # fmt: skip
    path = save(model, tmp_path / "ml_first.onnx")
    r = inspect_model(path)
    assert list(r.opset_import) == ["ai.onnx", "ai.onnx.ml", "com.x"]
    text = runner.invoke(app, ["inspect", str(path)]).stdout
    assert "opsets ai.onnx 17, ai.onnx.ml 1, com.x 2" in text
    assert format_opsets({"ai.onnx.ml": 1, "": 21}) == "ai.onnx 21, ai.onnx.ml 1"
    added = runner.invoke(app, ["models", "add", str(save(linear(), tmp_path / "l.onnx")),
                                "--name", "lin"])  # fmt: skip
    assert added.exit_code == 0, added.stderr
    listing = runner.invoke(app, ["models", "list"]).stdout
    assert "ai.onnx 17" in listing
    show = runner.invoke(app, ["models", "show", "lin"]).stdout
    assert "ai.onnx 17" in show
