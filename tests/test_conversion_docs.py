"""docs/conversion.md, "Float32 drift in tree ensembles" and "One output naming rule": the
commands of that section, run as written (the doc's snippets are taken from this file)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from typer.testing import CliRunner

from modelforge.cli.app import app

pytest.importorskip("skl2onnx")
runner = CliRunner()

# The section's shell block, line for line.
COMMANDS = """
modelforge validate gbr.onnx --inputs golden_in.npz --expected golden_out.npz
modelforge validate gbr.onnx --inputs golden_in.npz --expected golden_out.npz --rtol 0 --atol 0
"""


def _gbr(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)) * 1000  # float64 training data, as pandas gives it
    y = x @ rng.normal(size=8) + 1e5
    reg = GradientBoostingRegressor(n_estimators=200, random_state=0).fit(x, y)
    onx = to_onnx(reg, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    (tmp_path / "gbr.onnx").write_bytes(onx.SerializeToString())
    np.savez(tmp_path / "golden_in.npz", X=x[:100].astype(np.float32))
    np.savez(tmp_path / "golden_out.npz", variable=reg.predict(x[:100]).reshape(-1, 1))
    return reg, x[:100]


def _max_abs_error(tmp_path, reg, x) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "gbr.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": x.astype(np.float32)})[0].astype(np.float64)
    return float(np.max(np.abs(got - reg.predict(x).reshape(-1, 1))))


def test_validate_measures_float32_drift_of_a_tree_ensemble(tmp_path, monkeypatch):
    reg, x = _gbr(tmp_path)
    drift = _max_abs_error(tmp_path, reg, x)
    monkeypatch.chdir(tmp_path)
    first, strict = [shlex.split(c)[1:] for c in COMMANDS.strip().splitlines()]

    res = runner.invoke(app, [*first, "--json"])
    assert res.exit_code == 0, res.stderr
    parity = next(c for c in json.loads(res.stdout)["result"]["checks"] if c["name"] == "parity")
    assert parity["status"] == "pass"
    (out,) = parity["details"]["outputs"]
    assert out["max_abs"] == pytest.approx(drift, rel=1e-6, abs=1e-12)

    res = runner.invoke(app, strict)
    if drift > 0:  # float32 sums differ from float64 ones: no tolerance means a failure
        assert res.exit_code == 9
        assert "output 'variable' differs from the expected outputs" in res.stdout
    else:
        assert res.exit_code == 0


def test_regressor_output_is_variable_0_in_every_tabular_format(tmp_path):
    import pyarrow.parquet as pq

    reg, x = _gbr(tmp_path)
    header = ",".join(f"c{i}" for i in range(8))
    rows = "\n".join(",".join(repr(float(v)) for v in r) for r in x[:5].astype(np.float32))
    (tmp_path / "d.csv").write_text(header + "\n" + rows + "\n")
    model = str(tmp_path / "gbr.onnx")
    for name in ("out.csv", "out.parquet", "out.jsonl"):
        res = runner.invoke(
            app, ["predict", model, str(tmp_path / "d.csv"), "-o", str(tmp_path / name)]
        )
        assert res.exit_code == 0, res.stderr
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "variable_0"
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["variable_0"] and table.num_rows == 5
    assert str(table.schema.field("variable_0").type) == "float"
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert list(first) == ["variable_0"]
