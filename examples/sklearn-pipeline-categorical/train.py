"""Train a scikit-learn pipeline with categorical string columns and convert it to ONNX.

The pipeline is a ColumnTransformer (OneHotEncoder on the string columns, StandardScaler on
the numeric ones) followed by a LogisticRegression. skl2onnx converts it with ONE model input
per CSV column (`initial_types`: StringTensorType([None, 1]) for strings,
FloatTensorType([None, 1]) for numbers), so `modelforge predict` can match CSV columns to
model inputs by name, whatever order the CSV has them in.

Writes churn.onnx and customers.csv (columns in a different order than the model inputs, plus
an id column). The data is synthetic and generated here; nothing is downloaded.
Needs the dev extra (pip install -e '.[dev]'). Written against scikit-learn 1.9 and
skl2onnx 1.20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).parent
STRING_COLUMNS = ["plan", "region"]
NUMERIC_COLUMNS = ["tenure_months", "monthly_spend", "support_calls"]
# The order of the model inputs; customers.csv deliberately uses another order.
CSV_COLUMNS = ["id", "support_calls", "region", "monthly_spend", "plan", "tenure_months"]


def make_customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Synthetic customers; churn is more likely with short tenure and many support calls."""
    plan = rng.choice(["basic", "plus", "premium"], size=n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], size=n)
    tenure = rng.integers(1, 72, size=n)
    spend = np.round(rng.gamma(4.0, 12.0, size=n) + (plan == "premium") * 40.0, 2)
    calls = rng.poisson(1.5, size=n)
    score = 0.9 * calls - 0.06 * tenure + 1.2 * (plan == "basic") + 0.6 * (region == "east")
    churn = rng.random(n) < 1.0 / (1.0 + np.exp(-(score + 0.5)))
    return pd.DataFrame(
        {
            "id": [f"c-{i:04d}" for i in range(n)],
            "plan": plan,
            "region": region,
            "tenure_months": tenure,
            "monthly_spend": spend,
            "support_calls": calls,
            "churn": np.where(churn, "yes", "no"),
        }
    )


def main() -> None:
    rng = np.random.default_rng(7)
    data = make_customers(600, rng)
    features = data[STRING_COLUMNS + NUMERIC_COLUMNS].copy()
    features[NUMERIC_COLUMNS] = features[NUMERIC_COLUMNS].astype(np.float32)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("onehot", OneHotEncoder(handle_unknown="ignore"), STRING_COLUMNS),
                        ("scale", StandardScaler(), NUMERIC_COLUMNS),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(features, data["churn"])

    # One input per column, named exactly like the column it reads.
    initial_types = [(c, StringTensorType([None, 1])) for c in STRING_COLUMNS]
    initial_types += [(c, FloatTensorType([None, 1])) for c in NUMERIC_COLUMNS]
    onx = to_onnx(
        model,
        initial_types=initial_types,
        target_opset={"": 17, "ai.onnx.ml": 3},
        # zipmap=False: probabilities as a plain float tensor [N, 2] (columns in the order of
        # model.classes_, here "no", "yes") instead of a list of {class: probability} maps.
        options={id(model.named_steps["clf"]): {"zipmap": False}},
    )
    onx.doc_string = "Churn classifier (OneHotEncoder + StandardScaler + LogisticRegression)"
    (HERE / "churn.onnx").write_bytes(onx.SerializeToString())

    customers = make_customers(10, np.random.default_rng(11))[CSV_COLUMNS]
    customers.to_csv(HERE / "customers.csv", index=False)

    # Golden files for `modelforge validate --inputs --expected`: the same customers as
    # arrays keyed by model input name, and what scikit-learn itself predicts for them.
    golden = {c: customers[[c]].to_numpy().astype(str) for c in STRING_COLUMNS}
    golden |= {c: customers[[c]].to_numpy().astype(np.float32) for c in NUMERIC_COLUMNS}
    frame = customers[STRING_COLUMNS + NUMERIC_COLUMNS].astype(dict.fromkeys(NUMERIC_COLUMNS, "f4"))
    np.savez(HERE / "inputs.npz", **golden)
    np.savez(
        HERE / "expected.npz",
        label=model.predict(frame).astype(str),
        probabilities=model.predict_proba(frame).astype(np.float32),
    )
    print(f"classes: {list(model.classes_)}")
    print(f"wrote churn.onnx, customers.csv, inputs.npz and expected.npz in {HERE}")


if __name__ == "__main__":
    main()
