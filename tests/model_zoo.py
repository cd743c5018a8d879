"""Tiny models for the validate/inspect/convert tests, one per failure class (built in code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.builders import _model, linear


def _vi(name, dtype=TensorProto.FLOAT, shape=("N", 2)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def custom_domain() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="fancy")],
        "custom",
        [_vi("x")],
        [_vi("y")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 8
    return model


def ir3_initializers_as_inputs() -> onnx.ModelProto:
    """IR 3 style: every initializer (W, B) is also a graph input (overridable)."""
    model = linear(opset=8)
    model.ir_version = 3
    for init in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(init.name, TensorProto.FLOAT, list(init.dims))
        )
    return model


def string_input() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strings",
        [_vi("s", TensorProto.STRING, ["N"])],
        [_vi("out", TensorProto.STRING, ["N"])],
    )
    return _model(graph)


def cycle() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "b"], ["a"], name="first"),
            helper.make_node("Relu", ["a"], ["b"], name="second"),
        ],
        "cycle",
        [_vi("x")],
        [_vi("b")],
    )
    return _model(graph)


def undefined_input() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")],
        "undefined",
        [_vi("x")],
        [_vi("y")],
    )
    return _model(graph)


def duplicate_outputs() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["y"], name="one"),
            helper.make_node("Neg", ["x"], ["y"], name="two"),
        ],
        "dup",
        [_vi("x")],
        [_vi("y")],
    )
    return _model(graph)


def negative_dims() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "neg",
        [_vi("x", shape=["N", -3])],
        [_vi("y", shape=["N", -3])],
    )
    return _model(graph)


def nested_ifs(depth: int) -> onnx.ModelProto:
    """If nodes nested ``depth`` deep in their then-branches; else-branches are leaves."""
    body_out = [_vi("r", shape=[2])]
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["r"])], "leaf", [], body_out)
    inner = leaf
    for level in range(depth):
        node = helper.make_node(
            "If", ["cond"], ["r"], then_branch=inner, else_branch=leaf, name=f"if{level}"
        )
        inner = helper.make_graph([node], f"level{level}", [], body_out)
    graph = helper.make_graph(
        list(inner.node),
        "nested",
        [_vi("cond", TensorProto.BOOL, []), _vi("x", shape=[2])],
        [_vi("r", shape=[2])],
    )
    return _model(graph)


def nan_output() -> onnx.ModelProto:
    """y = log(x - 10): NaN on synthesized inputs."""
    ten = numpy_helper.from_array(np.array(10.0, dtype=np.float32), "ten")
    graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "ten"], ["d"]), helper.make_node("Log", ["d"], ["y"])],
        "nan",
        [_vi("x")],
        [_vi("y")],
        initializer=[ten],
    )
    return _model(graph)


def wrong_declared_dtype() -> onnx.ModelProto:
    """Declares a float output that is really int64 (Shape)."""
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["y"])], "lie", [_vi("x")], [_vi("y", shape=[2])]
    )
    return _model(graph)


def wrong_declared_rank() -> onnx.ModelProto:
    """Identity of a [N, 2] input, but the output is declared [N, 2, 1]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "rank",
        [_vi("x")],
        [_vi("y", shape=["N", 2, 1])],
    )
    return _model(graph)


def ir_too_new() -> onnx.ModelProto:
    model = linear()
    model.ir_version = 99
    return model


def zipmap_classifier(path: Path) -> Path:
    """A scikit-learn logistic regression converted by skl2onnx with its default ZipMap."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    clf = LogisticRegression().fit(x, y)
    model = to_onnx(clf, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(model.SerializeToString())
    return path


def expand_bomb() -> onnx.ModelProto:
    """Expand a constant to 100000 x 100000 x 10 floats (400 GB) at run time."""
    shape = numpy_helper.from_array(np.array([100000, 100000, 10], dtype=np.int64), "shape")
    one = numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["one", "shape"], ["big"], name="expand"),
            helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
        ],
        "bomb",
        [_vi("x", shape=[1])],
        [_vi("y", shape=[])],
        initializer=[shape, one],
    )
    return _model(graph)
