"""Train a scikit-learn classifier on iris and convert it to ONNX with skl2onnx.

Writes iris.onnx (ZipMap probabilities: one column per class name) and iris.csv (features
for predict, with an id column). Needs the dev extra: pip install -e '.[dev]'.
Written against scikit-learn 1.9 and skl2onnx 1.20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = np.array(iris.target_names)[iris.target]  # string labels: setosa, versicolor, ...
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, 4]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={id(model.steps[-1][1]): {"zipmap": True}},
    )
    onx.doc_string = "Iris species classifier (StandardScaler + LogisticRegression)"
    (HERE / "iris.onnx").write_bytes(onx.SerializeToString())
    rng = np.random.default_rng(0)
    rows = rng.choice(len(x), size=12, replace=False)
    lines = ["id," + ",".join(COLUMNS)]
    lines += [f"flower-{i}," + ",".join(f"{v:g}" for v in x[i]) for i in rows]
    (HERE / "iris.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'iris.onnx'} and {HERE / 'iris.csv'}")


if __name__ == "__main__":
    main()
