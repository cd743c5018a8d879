"""Tiny ONNX models built in code for the tests (no binaries are committed).

Each builder returns a ModelProto; ``save(model, path)`` writes it. Area-specific builders
live next to the tests that need them; the common ones are here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OPSET = 17


def _model(graph, opset: int = DEFAULT_OPSET, ir_version: int = 8, **kw) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests", **kw
    )
    model.ir_version = ir_version
    return model


def linear(
    n_features: int = 4,
    n_out: int = 1,
    opset: int = DEFAULT_OPSET,
    batch: str | int = "N",
    seed: int = 0,
) -> onnx.ModelProto:
    """y = x @ W + b; input 'x' float32 [batch, F], output 'y' float32 [batch, n_out]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_features, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        initializer=[w, b],
    )
    return _model(graph, opset)


def add_two(opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Two inputs 'a' and 'b' float32 [N, 3] -> 'sum' = a + b, 'diff' = a - b."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["diff"]),
        ],
        "add_two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("diff", TensorProto.FLOAT, ["N", 3]),
        ],
    )
    return _model(graph, opset)


def identity(dtype: int = TensorProto.FLOAT, shape=("N", 2), name: str = "x") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], ["out"])],
        "identity",
        [helper.make_tensor_value_info(name, dtype, list(shape))],
        [helper.make_tensor_value_info("out", dtype, list(shape))],
    )
    return _model(graph)


def with_external_data(folder: Path, n_features: int = 4, location: str = "weights.bin") -> Path:
    """Save linear() with its weights in an external file next to it; returns the .onnx path."""
    folder.mkdir(parents=True, exist_ok=True)
    model = linear(n_features=n_features, n_out=2)
    onnx.save_model(
        model,
        folder / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return folder / "model.onnx"


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path
