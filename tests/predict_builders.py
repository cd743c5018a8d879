"""Models for the predict tests, built in code (scikit-learn via skl2onnx, onnx.helper).

``REGISTRY`` pairs each builder with the data it is fed and a check of what ``predict``
returns; ``tests/test_predict.py::test_registry_model`` runs every entry. (The
validate/inspect/convert models live in ``tests/model_zoo.py``.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests import builders

IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_like(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three separable classes of 4 float features, labels as strings."""
    rng = np.random.default_rng(seed)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0]])
    y = np.repeat(np.arange(3), n // 3)
    x = (centers[y] + rng.normal(scale=0.25, size=(len(y), 4))).astype(np.float32)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    return x, labels


def zipmap_classifier(path: Path) -> Path:
    """LogisticRegression with string labels and the default ZipMap probability output."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, labels = iris_like()
    clf = LogisticRegression(max_iter=500).fit(x, labels)
    onnx.save_model(to_onnx(clf, x[:1], target_opset=17), path)
    return path


def column_pipeline(path: Path) -> Path:
    """One [None, 1] input per column, incl. a string column (OneHotEncoder)."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    n = 120
    df = pd.DataFrame({
        "age": rng.uniform(18, 80, n).astype(np.float32),
        "income": rng.uniform(1, 100, n).astype(np.float32),
        "city": rng.choice(["paris", "rome", "oslo"], n),
    })  # fmt: skip
    y = ((df["age"] > 40) ^ (df["city"] == "rome")).astype(int)
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ])),
        ("clf", LogisticRegression()),
    ]).fit(df, y)  # fmt: skip
    types = [
        ("age", FloatTensorType([None, 1])),
        ("income", FloatTensorType([None, 1])),
        ("city", StringTensorType([None, 1])),
    ]
    model = convert_sklearn(
        pipe, initial_types=types, target_opset=17, options={id(pipe): {"zipmap": False}}
    )
    onnx.save_model(model, path)
    return path


def string_identity(path: Path) -> Path:
    return builders.save(builders.identity(TensorProto.STRING, ("N",), name="s"), path)


def rank3(path: Path) -> Path:
    """x float32 [N, 4] -> y = reshape(x, [N, 2, 2])."""
    shape = onnx.numpy_helper.from_array(np.array([-1, 2, 2], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "rank3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 2])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return builders.save(model, path)


def write_csv(path: Path, columns: dict[str, list]) -> Path:
    import polars as pl

    pl.DataFrame(columns).write_csv(path)
    return path


def features_csv(tmp_path: Path, **extra: list) -> Path:
    """d.csv: 3 rows of f0..f3 (0..11 as float32), plus ``extra`` columns."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    cols = {f"f{i}": x[:, i] for i in range(4)} | extra
    return write_csv(tmp_path / "d.csv", cols)


# tensor models (inputs that do not share a row dimension) -------------------------------


def _tensor_model(path: Path, name: str, nodes, inputs, outputs, initializer=()) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return builders.save(model, path)


def _vi(name: str, shape, dtype: int = TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def broadcast_add(path: Path) -> Path:
    """y = a [2, 3] + b [3]: operands that do not share a first dimension."""
    return _tensor_model(path, "bcast", [helper.make_node("Add", ["a", "b"], ["y"])],
                         [_vi("a", [2, 3]), _vi("b", [3])], [_vi("y", [2, 3])])  # fmt: skip


def weight_matmul(path: Path) -> Path:
    """y = x [N, 3] @ w [3, 4]: a weight tensor passed as an input."""
    return _tensor_model(path, "matmul", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                         [_vi("x", ["N", 3]), _vi("w", [3, 4])], [_vi("y", ["N", 4])])  # fmt: skip


def scalar_scale(path: Path) -> Path:
    """y = x [N, 2] * k []: a scalar input."""
    return _tensor_model(path, "scale", [helper.make_node("Mul", ["x", "k"], ["y"])],
                         [_vi("x", ["N", 2]), _vi("k", [])], [_vi("y", ["N", 2])])  # fmt: skip


def split_to_sequence(path: Path) -> Path:
    """SplitToSequence + SequenceLength: a sequence output and a scalar output."""
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0, keepdims=1),
        helper.make_node("SequenceLength", ["parts"], ["n"]),
    ]
    outs = [
        helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None),
        _vi("n", [], TensorProto.INT64),
    ]
    return _tensor_model(path, "seq", nodes, [_vi("x", ["N", 2])], outs)


def row_sum(path: Path) -> Path:
    """y [1, 1] = ReduceSum(x [N, 3]): one value from N rows."""
    return _tensor_model(path, "rsum", [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)],
                         [_vi("x", ["N", 3])], [_vi("y", [1, 1])])  # fmt: skip


def uneven_split(path: Path) -> Path:
    """x [3] -> p [2], q [1]: split outputs of different lengths."""
    split = helper.make_tensor("s", TensorProto.INT64, [2], [2, 1])
    return _tensor_model(path, "split", [helper.make_node("Split", ["x", "s"], ["p", "q"])],
                         [_vi("x", [3])], [_vi("p", [2]), _vi("q", [1])], [split])  # fmt: skip


# the registry: each builder with the data it is fed and what its result must satisfy ----


@dataclass(frozen=True)
class Case:
    """One test model: how it is built, what it is fed, what predict() must return."""

    name: str
    build: Callable[[Path], Path]
    data: Callable[[], Any]
    check: Callable[[Any], None]


def _iris_frame() -> Any:
    import pandas as pd

    return pd.DataFrame(iris_like(n=30)[0], columns=IRIS_NAMES)


def _check_zipmap(out: Any) -> None:
    probs = out.filter(like="output_probability_").to_numpy()
    assert probs.shape == (30, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert set(out["output_label"]) <= {"setosa", "versicolor", "virginica"}


def _columns_data() -> dict[str, np.ndarray]:
    return {
        "age": np.array([[30.0], [60.0]], np.float32),
        "income": np.array([[5.0], [50.0]], np.float32),
        "city": np.array([["rome"], ["oslo"]]),
    }


def _check_columns(out: Any) -> None:
    assert out["label"].shape == (2,) and out["probabilities"].shape == (2, 2)


def _check_strings(out: Any) -> None:
    assert out["out"].tolist() == ["a", "", "é"]


def _check_rank3(out: Any) -> None:
    assert out["y"].shape == (2, 2, 2) and out["y"][1].tolist() == [[4, 5], [6, 7]]


def _check_broadcast(out: Any) -> None:
    np.testing.assert_array_equal(out["y"], [[1, 2, 3], [1, 2, 3]])


def _check_matmul(out: Any) -> None:
    np.testing.assert_array_equal(out["y"], np.ones((5, 3)) @ np.eye(3, 4))


def _check_scale(out: Any) -> None:
    np.testing.assert_array_equal(out["y"], np.full((2, 2), 3.0))


def _check_sequence(out: Any) -> None:
    assert int(out["n"]) == 3 and len(out["parts"]) == 3
    np.testing.assert_array_equal(np.concatenate(out["parts"]), np.arange(6).reshape(3, 2))


def _check_row_sum(out: Any) -> None:
    np.testing.assert_array_equal(out["y"], [[15.0]])


def _check_split(out: Any) -> None:
    assert out["p"].tolist() == [1, 2] and out["q"].tolist() == [3]


REGISTRY: list[Case] = [
    Case("zipmap_classifier", zipmap_classifier, _iris_frame, _check_zipmap),
    Case("column_pipeline", column_pipeline, _columns_data, _check_columns),
    Case("string_identity", string_identity, lambda: {"s": np.array(["a", "", "é"])},
         _check_strings),
    Case("rank3", rank3, lambda: {"x": np.arange(8, dtype=np.float32).reshape(2, 4)},
         _check_rank3),
    Case("broadcast_add", broadcast_add,
         lambda: {"a": np.ones((2, 3), np.float32), "b": np.arange(3, dtype=np.float32)},
         _check_broadcast),
    Case("weight_matmul", weight_matmul,
         lambda: {"x": np.ones((5, 3), np.float32), "w": np.eye(3, 4, dtype=np.float32)},
         _check_matmul),
    Case("scalar_scale", scalar_scale,
         lambda: {"x": np.ones((2, 2), np.float32), "k": np.array(3.0, np.float32)},
         _check_scale),
    Case("split_to_sequence", split_to_sequence,
         lambda: {"x": np.arange(6, dtype=np.float32).reshape(3, 2)}, _check_sequence),
    Case("row_sum", row_sum, lambda: {"x": np.ones((5, 3), np.float32)}, _check_row_sum),
    Case("uneven_split", uneven_split, lambda: {"x": np.array([1, 2, 3], np.float32)},
         _check_split),
]  # fmt: skip
