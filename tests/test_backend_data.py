"""predict on the models of the ONNX backend test data shipped with the onnx wheel.

Every model under ``onnx/backend/test/data/*/*/`` that has a ``test_data_set_0`` is run
with its inputs (TensorProto ``.pb`` files written to an NPZ in ``tmp_path``) through the
library (all of them, in process) and through the CLI (a sample), and compared with the
expected outputs using the tolerances of onnx's own backend runner (``rtol=1e-3``,
``atol=1e-7`` unless the model's ``data.json`` says otherwise). Models whose opset is too
old for onnxruntime's kernels run after predict's in-memory upgrade and must match too.
Models onnxruntime cannot run must be refused with a ModelForgeError, never an internal
error; they are listed in ``ORT_CANNOT_RUN`` with the reason.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelforge.errors import ModelForgeError
from modelforge.inference import predict_to

DATA = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"
MODELS = sorted(
    Path(m).parent.relative_to(DATA).as_posix()
    for m in glob.glob(str(DATA / "*" / "*" / "model.onnx"))
    if (Path(m).parent / "test_data_set_0").is_dir()
)

# Genuine onnxruntime limitations (checked: onnxruntime 1.32 refuses these directly too).
ORT_CANNOT_RUN = {
    # ai.onnx.preview.training Gradient: no onnxruntime kernel outside training builds
    "simple/test_gradient_of_add": "Gradient op",
    "simple/test_gradient_of_add_and_mul": "Gradient op",
    # StringNormalizer with locale "en_US"/default stopwords: the locale is not installed,
    # so onnxruntime fails creating the kernel
    "simple/test_strnorm_model_monday_casesensintive_lower": "StringNormalizer locale",
    "simple/test_strnorm_model_monday_casesensintive_upper": "StringNormalizer locale",
    "simple/test_strnorm_model_monday_empty_output": "StringNormalizer locale",
    "simple/test_strnorm_model_monday_insensintive_upper_twodim": "StringNormalizer locale",
    # opset-6 PRelu broadcast its slope from axis 1 (legacy broadcast); onnxruntime has no
    # opset-6 kernel, and the opset converter keeps the [C] slope, which the numpy-style
    # broadcast of opset 7+ refuses: onnxruntime cannot run these in any form
    "pytorch-converted/test_PReLU_1d_multiparam": "legacy-broadcast PRelu",
    "pytorch-converted/test_PReLU_2d_multiparam": "legacy-broadcast PRelu",
    "pytorch-converted/test_PReLU_3d_multiparam": "legacy-broadcast PRelu",
}
CLI_SAMPLE = [
    "pytorch-converted/test_Linear",  # opset 6: upgraded in memory
    "pytorch-operator/test_operator_chunk",  # split outputs of different lengths
    "simple/test_expand_shape_model3",  # a data tensor next to a shape tensor
    "simple/test_sequence_model6",  # SequenceLength: a scalar output
    "simple/test_gradient_of_add",  # refused cleanly
]


def _read_pb(path: str):
    """A TensorProto (or, for sequence outputs, a SequenceProto) as numpy."""
    data = Path(path).read_bytes()
    t = onnx.TensorProto()
    t.ParseFromString(data)
    if t.data_type:  # a tensor
        return numpy_helper.to_array(t)
    seq = onnx.SequenceProto()
    seq.ParseFromString(data)
    return [np.asarray(x) for x in numpy_helper.to_list(seq)]


def _case(name: str, tmp_path: Path):
    d = DATA / name
    model = onnx.load(d / "model.onnx", load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    ds = d / "test_data_set_0"
    inputs = [_read_pb(p) for p in sorted(glob.glob(str(ds / "input_*.pb")))]
    outputs = [_read_pb(p) for p in sorted(glob.glob(str(ds / "output_*.pb")))]
    out_names = [o.name for o in model.graph.output]
    npz = tmp_path / "inputs.npz"
    # string tensors come back as object arrays, which NPZ input refuses (pickles)
    inputs = [a.astype(str) if a.dtype == object else a for a in inputs]
    np.savez(npz, **dict(zip(names, inputs, strict=True)))
    rtol, atol = 1e-3, 1e-7
    if (d / "data.json").exists():
        meta = json.loads((d / "data.json").read_text())
        rtol, atol = meta.get("rtol", rtol), meta.get("atol", atol)
    return d / "model.onnx", npz, dict(zip(out_names, outputs, strict=True)), rtol, atol


def _load_npz(path: Path, expected: dict) -> dict:
    got = dict(np.load(path, allow_pickle=False))
    out = {}
    for name, want in expected.items():
        if isinstance(want, list):
            out[name] = [got[f"{name}_{i}"] for i in range(len(want))]
        else:
            out[name] = got[name]
    return out


def _compare(got: dict, expected: dict, rtol: float, atol: float) -> None:
    for name, want in expected.items():
        value = got[name]
        if isinstance(want, list):
            assert len(value) == len(want), name
            for g, w in zip(value, want, strict=True):
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)
            continue
        assert value.shape == want.shape, f"{name}: {value.shape} != {want.shape}"
        if want.dtype.kind in "OUS":
            assert value.astype(str).tolist() == want.astype(str).tolist(), name
        else:
            assert value.dtype == want.dtype, f"{name}: {value.dtype} != {want.dtype}"
            np.testing.assert_allclose(value, want, rtol=rtol, atol=atol, err_msg=name)


def test_the_backend_data_is_there():
    assert len(MODELS) >= 100, "the onnx wheel ships the backend test data"
    assert set(ORT_CANNOT_RUN) <= set(MODELS) and set(CLI_SAMPLE) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_backend_model_through_the_library(name, tmp_path):
    model, npz, expected, rtol, atol = _case(name, tmp_path)
    out = tmp_path / "out.npz"
    if name in ORT_CANNOT_RUN:
        with pytest.raises(ModelForgeError) as info:
            predict_to(model, [str(npz)], str(out))
        assert info.value.code != "internal_error"
        assert not out.exists()
        return
    predict_to(model, [str(npz)], str(out))
    _compare(_load_npz(out, expected), expected, rtol, atol)


@pytest.mark.parametrize("name", CLI_SAMPLE)
def test_backend_model_through_the_cli(name, tmp_path):
    model, npz, expected, rtol, atol = _case(name, tmp_path)
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "modelforge", "predict", str(model), str(npz), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if name in ORT_CANNOT_RUN:
        assert proc.returncode not in (0, 1), proc.stderr  # a documented error, not a bug
        assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
        assert "Traceback" not in proc.stderr and proc.stdout == "" and not out.exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    _compare(_load_npz(out, expected), expected, rtol, atol)
