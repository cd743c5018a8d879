"""The one way to open a model: ``open_model`` (model/) and ``open_stored`` (store/, the
edge that resolves references and checks a stored version's bytes against its hash)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

import modelforge
from modelforge.cli.app import app
from modelforge.errors import InvalidModelError, StoreCorruptError, UnsafeModelError
from modelforge.model.open import open_model
from modelforge.store.add import add_model
from modelforge.store.open import open_stored
from tests.builders import linear, save, with_external_data

runner = CliRunner()


def test_open_model_reads_hashes_and_parses_only_when_needed(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    opened = open_model(path)
    assert opened.data == path.read_bytes()
    assert opened.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert opened.proto is None and opened.schema is None  # no external data: no parse
    schema = opened.ensure_schema()
    assert [s.name for s in schema.inputs] == ["x"] and opened.proto is not None
    ext = open_model(with_external_data(tmp_path / "ext"))
    assert ext.proto is not None  # may name external data: parsed and checked at once
    assert [f.location for f in ext.external] == ["weights.bin"]


def test_open_model_never_imports_onnx_on_the_fast_path(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    code = (
        "import sys\nfrom modelforge.model.open import open_model\n"
        f"m = open_model({str(path)!r})\nprint(len(m.sha256), 'onnx' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["64", "False"]


def test_expected_sha256_mismatch_names_the_file(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    with pytest.raises(InvalidModelError) as exc:
        open_model(path, expected_sha256="0" * 64)
    assert exc.value.code == "sha256_mismatch" and "m.onnx" in exc.value.message


def test_external_data_outside_the_folder_is_refused_on_open(tmp_path):
    folder = tmp_path / "ext"
    path = with_external_data(folder)
    (folder / "weights.bin").rename(tmp_path / "weights.bin")
    os.symlink(tmp_path / "weights.bin", folder / "weights.bin")
    with pytest.raises(UnsafeModelError) as exc:
        open_model(path)
    assert exc.value.code == "unsafe_external_data"


def _flip_weight_bytes(path, model):
    """Flip two bytes inside the stored weights W (the blob is read-only: make it writable)."""
    raw = numpy_helper.to_array(model.graph.initializer[0]).tobytes()
    data = path.read_bytes()
    at = data.index(raw) + 2
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(bytes([data[at] ^ 0xFF, data[at + 1] ^ 0xFF]))


def test_open_stored_checks_the_recorded_hash(tmp_path):
    model = linear()
    added = add_model(save(model, tmp_path / "m.onnx"), "lin")
    loc, opened = open_stored("lin")
    assert (loc.display, opened.trusted, opened.sha256) == ("lin:1", True, added.sha256)
    _flip_weight_bytes(loc.path, model)
    with pytest.raises(StoreCorruptError) as exc:
        open_stored("lin:1")
    err = exc.value
    assert err.code == "sha256_mismatch" and err.exit_code == 6
    assert "lin:1" in err.message and str(loc.path) in err.message
    assert "modelforge models verify lin:1" in (err.hint or "")


def test_corrupt_stored_model_is_refused_by_validate_inspect_and_convert(tmp_path):
    """Issue 11 #2: flipping two bytes of a stored model's weights was used silently."""
    model = linear()
    add_model(save(model, tmp_path / "m.onnx"), "lin")
    loc, _ = open_stored("lin")
    _flip_weight_bytes(loc.path, model)
    for argv in (
        ["validate", "lin"],
        ["inspect", "lin:1"],
        ["convert", "lin", "--opset", "18", "-o", str(tmp_path / "out.onnx")],
    ):
        r = runner.invoke(app, argv)
        assert r.exit_code == 6, (argv, r.stderr)
        assert r.stdout == ""
        assert "does not match the sha256" in r.stderr
        assert "modelforge models verify lin:1" in r.stderr
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(StoreCorruptError):
        modelforge.validate_model("lin")


def test_corrupt_stored_model_is_refused_by_predict(tmp_path):
    model = linear()
    add_model(save(model, tmp_path / "m.onnx"), "lin")
    data = tmp_path / "in.csv"
    data.write_text("a,b,c,d\n1,2,3,4\n")
    ok = runner.invoke(app, ["predict", "lin", str(data)])
    assert ok.exit_code == 0, ok.stderr
    loc, _ = open_stored("lin")
    _flip_weight_bytes(loc.path, model)
    r = runner.invoke(app, ["predict", "lin", str(data)])
    assert r.exit_code == 6, r.stderr
    assert r.stdout == "" and "modelforge models verify lin:1" in r.stderr


def test_missing_stored_file_points_at_verify_not_at_paths(tmp_path):
    add_model(save(linear(), tmp_path / "m.onnx"), "lin")
    loc, _ = open_stored("lin")
    loc.path.unlink()
    with pytest.raises(StoreCorruptError) as exc:
        open_stored("lin")
    assert exc.value.code == "stored_file_missing"
    assert "modelforge models verify lin:1" in (exc.value.hint or "")
    r = runner.invoke(app, ["inspect", "lin"])
    assert r.exit_code == 6
    assert "store reference" not in r.stderr and "models verify lin:1" in r.stderr


def test_damaged_external_data_of_a_stored_version_is_refused(tmp_path):
    add_model(with_external_data(tmp_path / "src"), "ext")
    loc, opened = open_stored("ext")
    assert [f.location for f in opened.external] == ["weights.bin"]
    blob = loc.path.parent / "weights.bin"
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as exc:
        open_stored("ext")
    assert exc.value.code == "sha256_mismatch" and "weights.bin" in exc.value.message


def test_file_paths_are_opened_as_given(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    loc, opened = open_stored(str(path))
    assert loc.origin == "file" and not opened.trusted and opened.path == path
    w = np.asarray(numpy_helper.to_array(opened.parse().graph.initializer[0]))
    assert w.shape == (4, 1)


def test_external_data_is_hashed_once_per_file_state(tmp_path):
    """A large stored model is not re-read on every load, yet any change is still caught."""
    from modelforge.store import verified

    add_model(with_external_data(tmp_path / "src"), "ext")
    loc, _ = open_stored("ext")
    blob = loc.path.parent / "weights.bin"
    sha = next(f["sha256"] for f in loc.metadata["files"] if f["path"] == "weights.bin")
    key = verified.file_key(blob, blob.stat(), sha)
    assert verified.is_verified(key)  # remembered after the first (hashing) open
    open_stored("ext")  # the cached state: no re-hash needed, still accepted
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01  # same size: only the hash can tell
    blob.write_bytes(bytes(data))
    assert not verified.is_verified(verified.file_key(blob, blob.stat(), sha))
    with pytest.raises(StoreCorruptError) as exc:
        open_stored("ext")
    assert exc.value.code == "sha256_mismatch"


def test_a_damaged_version_is_not_exported(tmp_path):
    model = linear()
    add_model(save(model, tmp_path / "m.onnx"), "lin")
    loc, _ = open_stored("lin")
    _flip_weight_bytes(loc.path, model)
    r = runner.invoke(app, ["models", "export", "lin", "-o", str(tmp_path / "lin.tar.gz")])
    assert r.exit_code == 6 and "models verify lin:1" in r.stderr
    assert not (tmp_path / "lin.tar.gz").exists()
    loc.path.unlink()
    r = runner.invoke(app, ["models", "export", "lin", "-o", str(tmp_path / "lin.tar.gz")])
    assert r.exit_code == 6 and "missing" in r.stderr and "internal error" not in r.stderr
