"""Models and data for the golden-examples and models-diff tests, built in code: scikit-learn
classifiers through skl2onnx, a PyTorch-style MLP with onnx.helper, schema variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.predict_builders import IRIS_NAMES, iris_like, write_csv


def iris_csv(path: Path, n: int = 150, extra: bool = False) -> Path:
    x, labels = iris_like(n)
    cols: dict[str, list] = {name: x[:, i].tolist() for i, name in enumerate(IRIS_NAMES)}
    if extra:
        cols = {"id": list(range(len(x))), **cols, "note": ["r"] * len(x)}
    return write_csv(path, cols)


def logreg(
    path: Path,
    *,
    C: float = 1.0,  # noqa: N803 - scikit-learn's name
    metadata: dict[str, str] | None = None,
    int_labels: bool = False,
    zipmap: bool = True,
    opset: int = 17,
) -> Path:
    """LogisticRegression on iris_like (string labels unless ``int_labels``), ZipMap output."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, labels = iris_like()
    y = np.unique(labels, return_inverse=True)[1] if int_labels else labels
    clf = LogisticRegression(C=C, max_iter=1000).fit(x, y)
    options = None if zipmap else {id(clf): {"zipmap": False}}
    model = to_onnx(clf, x[:1], target_opset={"": opset, "ai.onnx.ml": 1}, options=options)
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save_model(model, path)
    return path


def mlp(
    path: Path,
    *,
    hidden: int = 8,
    scale_layer2: float = 1.0,
    opset: int = 17,
    features: int = 4,
    input_name: str = "X",
) -> Path:
    """X[N, features] -> Gemm -> Relu -> Gemm -> logits[N, 3], plus label = ArgMax (int64)."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(size=(features, hidden)).astype(np.float32)
    b1 = rng.normal(size=(hidden,)).astype(np.float32)
    w2 = (rng.normal(size=(hidden, 3)) * scale_layer2).astype(np.float32)
    b2 = rng.normal(size=(3,)).astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w1, "fc1.weight"), (b1, "fc1.bias"), (w2, "fc2.weight"), (b2, "fc2.bias"))
    ]
    nodes = [
        helper.make_node("Gemm", [input_name, "fc1.weight", "fc1.bias"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch"
    )
    model.ir_version = 8
    onnx.save_model(model, path)
    return path


Spec = tuple[str, int, list]


def io_model(path: Path, inputs: list[Spec], outputs: list[Spec]) -> Path:
    """Outputs are Identity/Cast of the input at the same position (shapes as declared)."""
    nodes = []
    for i, (name, elem, _shape) in enumerate(outputs):
        src = inputs[min(i, len(inputs) - 1)]
        op = "Identity" if src[1] == elem else "Cast"
        kw = {} if op == "Identity" else {"to": elem}
        nodes.append(helper.make_node(op, [src[0]], [name], **kw))
    graph = helper.make_graph(
        nodes,
        "io",
        [helper.make_tensor_value_info(n, e, s) for n, e, s in inputs],
        [helper.make_tensor_value_info(n, e, s) for n, e, s in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, path)
    return path


def mlp_rows(n: int = 40, features: int = 4, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)
