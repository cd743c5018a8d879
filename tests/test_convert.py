"""convert: opset conversion with parity, atomic write, metadata, external data."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import OutputError, UsageError
from modelforge.model.convert import convert_model, convert_opset
from tests.builders import add_two, linear, save, with_external_data

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


def test_upgrade_opset_6_keeps_metadata(tmp_path):
    model = add_two(opset=6)
    model.doc_string = "docs"
    helper.set_model_props(model, {"author": "me"})
    src = save(model, tmp_path / "old.onnx")
    out = tmp_path / "new.onnx"
    result = convert_model(src, 13, out)
    assert (result.from_opset, result.to_opset) == (6, 13)
    assert result.compared_with == "onnx.reference"  # onnxruntime cannot run opset 6 Add
    assert all(p["ok"] for p in result.parity)
    new = onnx.load(out)
    assert new.opset_import[0].version == 13
    assert new.doc_string == "docs" and new.metadata_props[0].value == "me"
    assert new.producer_name == "tests"
    assert [d.dim_param for d in new.graph.input[0].type.tensor_type.shape.dim][0] == "N"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_upgrade_compares_in_onnxruntime(tmp_path):
    result = convert_model(save(linear(opset=13), tmp_path / "m.onnx"), 18, tmp_path / "m18.onnx")
    assert result.compared_with == "onnxruntime"
    assert result.parity[0]["max_abs"] == pytest.approx(0.0, abs=1e-6)


def test_bad_tolerance_is_usage_error(tmp_path):
    src = save(linear(), tmp_path / "m.onnx")
    out = tmp_path / "never.onnx"
    with pytest.raises(UsageError):
        convert_model(src, 13, out, rtol=-1)
    assert not out.exists()


_LOSSY_SCRIPT = """
import json, sys
import numpy as np
from onnx import numpy_helper
from modelforge.errors import CheckFailedError
from modelforge.model import convert as convert_mod

real = convert_mod.convert_opset

def lossy(model, opset):
    out = real(model, opset)
    w = numpy_helper.to_array(out.graph.initializer[0]) + 0.25
    out.graph.initializer[0].CopyFrom(numpy_helper.from_array(w.astype(np.float32), "W"))
    return out

convert_mod.convert_opset = lossy  # the sandbox child is forked from this process
try:
    convert_mod.convert_model(sys.argv[1], 17, sys.argv[2])
except CheckFailedError as exc:
    print(json.dumps({"code": exc.code, "message": exc.message}))
"""


@pytest.mark.timeout(120)
def test_parity_mismatch_is_check_failed(tmp_path):
    """A converter that changes results (simulated: it perturbs a weight) is caught.

    Runs in a fresh interpreter so that the patch reaches the forked sandbox child.
    """
    import json
    import subprocess
    import sys

    src = save(linear(opset=13), tmp_path / "m.onnx")
    out = tmp_path / "never.onnx"
    proc = subprocess.run(
        [sys.executable, "-c", _LOSSY_SCRIPT, str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr
    err = json.loads(proc.stdout)
    assert err["code"] == "parity_mismatch"
    assert "output 'y'" in err["message"] and "nothing was written" in err["message"]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_external_data_written_next_to_output(tmp_path):
    src = with_external_data(tmp_path / "src")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = convert_model(src, 18, out_dir / "conv.onnx")
    assert result.external_data == "conv.onnx.data"
    assert sorted(p.name for p in out_dir.iterdir()) == ["conv.onnx", "conv.onnx.data"]
    loaded = onnx.load(out_dir / "conv.onnx")  # loads the external data from out_dir
    assert loaded.graph.initializer[0].dims == [4, 2]


def test_output_checks(tmp_path):
    src = save(linear(), tmp_path / "m.onnx")
    with pytest.raises(OutputError):
        convert_model(src, 13, tmp_path / "missing" / "x.onnx")
    with pytest.raises(UsageError):
        convert_model(src, 13, src)


def test_convert_opset_in_memory():
    converted = convert_opset(linear(opset=13), 17)
    assert converted.opset_import[0].version == 17


def test_cli(tmp_path):
    src = save(add_two(opset=6), tmp_path / "old.onnx")
    out = tmp_path / "new.onnx"
    result = runner.invoke(app, ["convert", str(src), "--opset", "13", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["result"]["to_opset"] == 13 and out.exists()
    human = runner.invoke(app, ["convert", str(src), "--opset", "13", "-o", str(out)])
    assert "opset 6" in human.stdout and "parity sum" in human.stdout
    bad = runner.invoke(app, ["convert", str(src), "--opset", "0", "-o", str(out)])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_store_model_with_hard_linked_external_data(tmp_path):
    src = with_external_data(tmp_path / "src")
    assert runner.invoke(app, ["models", "add", str(src), "--name", "ext"]).exit_code == 0
    out = tmp_path / "conv.onnx"
    import modelforge
    from modelforge.model.validate import ValidateOptions

    result = modelforge.convert_model("ext:1", 18, out)  # the public API resolves references
    assert result.external_data == "conv.onnx.data"
    assert (tmp_path / "conv.onnx.data").stat().st_mode & 0o777 == out.stat().st_mode & 0o777
    report = modelforge.validate_model("ext:1", ValidateOptions(reference=True))
    assert report.check("parity").status == "pass", report.check("parity")
