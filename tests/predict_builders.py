"""Models for the predict tests, built in code (scikit-learn via skl2onnx, onnx.helper)."""

from __future__ import annotations

from pathlib import Path

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
