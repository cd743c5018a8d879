"""Golden examples: ``models add --example``, show, verify, export/import, validate's
``examples`` check. Real models (skl2onnx, onnx.helper), real data files, no mocks."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

import modelforge
from modelforge.api import validate_model
from modelforge.cli.app import app
from modelforge.errors import DataError, NotFoundError, UsageError
from modelforge.store import examples as golden
from modelforge.store.archive import export_version, import_archive
from modelforge.store.layout import Store, write_json_atomic
from modelforge.store.ops import verify
from tests import golden_builders as gb
from tests.predict_builders import IRIS_NAMES

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def iris(tmp_path):
    return gb.logreg(tmp_path / "iris.onnx"), gb.iris_csv(tmp_path / "iris.csv", extra=True)


def _stored(ref: str):
    mv = modelforge.Store()
    from modelforge.store.catalog import find

    v = find(mv, ref)
    return v, golden.load(golden.examples_path(v.directory), v.meta["examples"], v.ref)


def test_examples_are_the_rows_predict_feeds_and_the_outputs_it_gives(iris, tmp_path):
    model, data = iris
    r = modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES, example_rows=20)
    assert r.examples["rows"] == 20 and r.examples["sources"] == [str(data)]
    assert r.examples["provider"] == "CPUExecutionProvider"
    import onnxruntime

    assert r.examples["onnxruntime"] == onnxruntime.__version__
    v, (feeds, outputs) = _stored("iris:1")
    # the inputs as fed: the stored column map picked 4 of the 6 CSV columns, cast to float32
    from modelforge.inference import iter_feeds

    fed = next(iter_feeds("iris:1", str(data)))
    assert list(feeds) == ["X"] and feeds["X"].dtype == np.float32
    np.testing.assert_array_equal(feeds["X"], fed.feeds["X"][:20])
    # the outputs predict gives on the same rows
    frame = modelforge.predict("iris:1", str(data))
    by_name = {o.name: o for o in outputs}
    assert by_name["output_label"].array.tolist() == frame["output_label"][:20].tolist()
    probs = by_name["output_probability"]
    assert probs.keys == ["setosa", "versicolor", "virginica"]
    np.testing.assert_allclose(probs.array[:, 2], frame["output_probability_virginica"][:20])
    assert v.meta["examples"]["file"] == "examples/golden.npz"
    # content-addressed: the file is a hard link to its blob
    blob = Store().blob_path(v.meta["examples"]["sha256"])
    assert os.path.samefile(blob, golden.examples_path(v.directory))


def test_default_rows_and_other_formats(tmp_path):
    model = gb.mlp(tmp_path / "mlp.onnx")
    x = gb.mlp_rows(300)
    np.savez(tmp_path / "x.npz", X=x)
    r = modelforge.add_model(model, "mlp", example=tmp_path / "x.npz")
    assert r.examples["rows"] == 256
    _, (feeds, outputs) = _stored("mlp:1")
    np.testing.assert_array_equal(feeds["X"], x[:256])
    assert [o.name for o in outputs] == ["logits", "label"]
    import polars as pl

    pl.DataFrame({f"f{i}": x[:, i] for i in range(4)}).write_parquet(tmp_path / "x.parquet")
    r = modelforge.add_model(model, "mlp", example=tmp_path / "x.parquet", example_rows=5)
    assert (r.version, r.examples["rows"]) == (2, 5)


def test_same_model_and_examples_dedupe_other_examples_make_a_version(iris):
    model, data = iris
    first = modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    again = modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    assert (again.created, again.version) == (False, 1)
    other = modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES, example_rows=7)
    assert other.created and other.version == 2
    assert first.examples["sha256"] != other.examples["sha256"]


def test_string_inputs_round_trip_without_pickles(tmp_path):
    from tests.predict_builders import string_identity

    model = string_identity(tmp_path / "s.onnx")
    data = gb.write_csv(tmp_path / "s.csv", {"s": ["a", "bb", "ccc"]})
    r = modelforge.add_model(model, "s", example=data)
    _, (feeds, outputs) = _stored("s:1")
    assert feeds["s"].dtype.kind == "U" and outputs[0].array.reshape(-1).tolist() == [
        "a",
        "bb",
        "ccc",
    ]
    report = validate_model("s")
    assert report.check("examples").status == "pass", report.check("examples")
    assert r.examples["rows"] == 3


def test_validate_examples_pass_skip_and_tolerances(iris, tmp_path):
    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    check = validate_model("iris").check("examples")
    assert (check.status, check.code) == ("pass", "ok")
    assert check.details["rtol"] == 1e-5 and check.details["atol"] == 1e-6
    plain = validate_model(model).check("examples")
    assert (plain.status, plain.code) == ("skip", "no_examples")
    r = invoke("validate", "iris", "--rtol", "0.01", "--json")
    assert r.exit_code == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["result"]["checks"]}
    assert checks["examples"]["details"]["rtol"] == 0.01
    assert checks["examples"]["details"]["atol"] == 1e-6


def _make_writable(path):
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def test_validate_and_verify_catch_a_tampered_example_file(iris):
    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    v, _ = _stored("iris:1")
    path = golden.examples_path(v.directory)
    blob = Store().blob_path(v.meta["examples"]["sha256"])
    os.unlink(path)  # break the hard link: tamper with this version's copy only
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = validate_model("iris")
    check = report.check("examples")
    assert (check.status, check.code) == ("fail", "examples_corrupt") and not report.ok
    assert "sha256 mismatch" in check.message
    res = verify("iris")
    assert [p["file"] for p in res.problems] == ["examples/golden.npz"]
    r = invoke("validate", "iris")
    assert r.exit_code == 9 and "examples" in r.stderr
    r = invoke("models", "verify", "iris")
    assert r.exit_code == 9 and "examples/golden.npz" in r.stdout


def test_validate_catches_outputs_that_drifted(iris):
    """Stored outputs that no longer match what onnxruntime computes (as after an upgrade):
    rewrite the stored outputs consistently (hash updated) and the rerun disagrees."""
    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    v, (feeds, outputs) = _stored("iris:1")
    rec = v.meta["examples"]
    arrays = {"i0": feeds["X"]}
    arrays["o0"] = outputs[0].array.astype(str)
    arrays["o0"][3] = "virginica" if arrays["o0"][3] != "virginica" else "setosa"
    arrays["o1"] = outputs[1].array + np.float32(1e-3)
    arrays["o1_keys"] = np.asarray(outputs[1].keys)
    path = golden.examples_path(v.directory)
    path.unlink()
    golden.write_npz(path, arrays)
    digest, size = golden.sha256_file(path)
    meta = dict(v.meta, examples={**rec, "sha256": digest, "size": size})
    _make_writable(v.directory / "meta.json")
    write_json_atomic(v.directory / "meta.json", meta)
    check = validate_model("iris").check("examples")
    assert (check.status, check.code) == ("fail", "examples_mismatch")
    assert "output_label" in check.message and "worst rows: 3" in check.message
    by_name = {o["name"]: o for o in check.details["outputs"]}
    assert by_name["output_label"]["changed_fraction"] == pytest.approx(1 / 150)
    assert by_name["output_probability"]["mismatch_fraction"] == 1.0
    loose = validate_model(
        "iris", modelforge.ValidateOptions(examples_rtol=0, examples_atol=0.01)
    ).check("examples")
    assert loose.status == "fail"  # the label flip stays: labels compare exactly
    assert {o["name"] for o in loose.details["outputs"] if o["differs"]} == {"output_label"}


def test_export_refuses_damaged_or_missing_examples(iris, tmp_path):
    """An archive is never written from a version whose examples are tampered or gone
    (it would only fail at import, and exporting again would not help)."""
    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    v, _ = _stored("iris:1")
    path = golden.examples_path(v.directory)
    blob = Store().blob_path(v.meta["examples"]["sha256"])
    os.unlink(path)  # this version's copy only
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    r = invoke("models", "export", "iris:1", "-o", str(tmp_path / "bad.tar.gz"))
    assert r.exit_code == 6 and "golden examples" in r.stderr and "sha256" in r.stderr
    assert not (tmp_path / "bad.tar.gz").exists() and "Traceback" not in r.stderr
    path.unlink()
    r = invoke("models", "export", "iris:1", "-o", str(tmp_path / "gone.tar.gz"), "--json")
    assert r.exit_code == 6, r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "stored_file_missing"
    assert not (tmp_path / "gone.tar.gz").exists()


def test_examples_round_trip_through_export_and_import(iris, tmp_path):
    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    export_version("iris:1", tmp_path / "iris.tar.gz")
    r = import_archive(tmp_path / "iris.tar.gz", name="copy")
    assert r.examples is not None and r.examples["rows"] == 150
    v, (feeds, _) = _stored("copy:1")
    assert v.meta["examples"]["sha256"] == _stored("iris:1")[0].meta["examples"]["sha256"]
    assert validate_model("copy").check("examples").status == "pass"
    assert verify().ok and verify().files_checked == 4
    r = invoke("models", "show", "copy", "--json")
    assert json.loads(r.stdout)["result"]["metadata"]["examples"]["rows"] == 150


def test_import_refuses_examples_that_do_not_match_the_manifest(iris, tmp_path):
    import io
    import tarfile

    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    export_version("iris:1", tmp_path / "good.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(tmp_path / "good.tar.gz") as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            payload = src.extractfile(m).read()
            if m.name == "examples/golden.npz":
                payload = payload[:-1] + bytes([payload[-1] ^ 1])
            dst.addfile(m, io.BytesIO(payload))
    r = invoke("models", "import", bad, "--name", "bad")
    assert r.exit_code == 6 and "golden examples" in r.stderr and r.stdout == ""
    assert Store().versions("bad") == []


def test_show_lists_examples(iris):
    model, data = iris
    r = invoke("models", "add", model, "--name", "iris", "--columns", ",".join(IRIS_NAMES),
               "--example", data, "--example-rows", "12")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "golden examples: 12 rows" in r.stdout
    r = invoke("models", "show", "iris")
    assert r.exit_code == 0
    assert "golden examples" in r.stdout and str(data) in r.stdout
    assert _stored("iris:1")[0].meta["examples"]["sha256"] in r.stdout


def test_big_examples_are_refused_with_the_limit(tmp_path, monkeypatch):
    model = gb.mlp(tmp_path / "mlp.onnx")
    np.savez(tmp_path / "x.npz", X=gb.mlp_rows(300))
    monkeypatch.setenv(golden.ENV_MAX_BYTES, "4096")
    with pytest.raises(DataError) as info:
        modelforge.add_model(model, "mlp", example=tmp_path / "x.npz")
    assert info.value.code == "examples_too_large"
    assert "over the limit of 4.0 KiB" in info.value.message
    assert "--example-rows" in (info.value.hint or "")
    assert Store().versions("mlp") == []
    r = invoke("models", "add", model, "--name", "mlp", "--example", tmp_path / "x.npz")
    assert r.exit_code == 5 and "examples_too_large" not in r.stdout
    assert "over the limit" in r.stderr
    with pytest.raises(UsageError):
        modelforge.add_model(model, "mlp", example=tmp_path / "x.npz", example_rows=10_001)
    r = invoke("models", "add", model, "--name", "mlp", "--example", tmp_path / "x.npz",
               "--example-rows", "0")  # fmt: skip
    assert r.exit_code == 2 and "--example-rows" in r.stderr


def test_missing_or_unmappable_example_data_stores_nothing(iris, tmp_path):
    model, data = iris
    with pytest.raises(NotFoundError):
        modelforge.add_model(model, "iris", example=tmp_path / "nope.csv")
    wrong = gb.write_csv(tmp_path / "wrong.csv", {"a": [1.0], "b": [2.0]})
    r = invoke("models", "add", model, "--name", "iris", "--example", wrong)
    assert r.exit_code == 5, r.stderr
    assert r.stderr.startswith("error: ") and r.stdout == ""
    assert Store().versions("iris") == []


def _rewrite_manifest(src, dst, change):
    import io
    import tarfile

    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            payload = tin.extractfile(m).read()
            if m.name == "modelforge-export.json":
                manifest = json.loads(payload)
                change(manifest["meta"]["examples"])
                payload = json.dumps(manifest).encode()
                m.size = len(payload)
            tout.addfile(m, io.BytesIO(payload))


def test_import_rebuilds_the_examples_record_and_refuses_a_malformed_one(iris, tmp_path):
    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    export_version("iris:1", tmp_path / "good.tar.gz")

    def extra(rec):
        rec["evil"] = "x" * 10
        rec["inputs"][0]["path"] = "/etc/passwd"

    _rewrite_manifest(tmp_path / "good.tar.gz", tmp_path / "extra.tar.gz", extra)
    r = import_archive(tmp_path / "extra.tar.gz", name="extra")
    v, _ = _stored(r.ref)
    assert "evil" not in v.meta["examples"] and "path" not in v.meta["examples"]["inputs"][0]
    assert validate_model("extra").check("examples").status == "pass"

    def bad(rec):
        rec["file"] = "../../escape.npz"

    _rewrite_manifest(tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz", bad)
    res = invoke("models", "import", tmp_path / "bad.tar.gz", "--name", "bad", "--json")
    assert res.exit_code == 4 and json.loads(res.stdout)["error"]["code"] == "bad_archive"
    assert Store().versions("bad") == []


def test_import_refuses_object_arrays_in_examples_naming_the_member(iris, tmp_path):
    """An archive whose examples NPZ holds a pickled object array (hash fixed up in the
    manifest): refused as a bad archive (exit 6), never unpickled, naming the archive's
    member rather than ModelForge's staging folder."""
    import hashlib
    import io
    import tarfile

    model, data = iris
    modelforge.add_model(model, "iris", example=data, columns=IRIS_NAMES)
    export_version("iris:1", tmp_path / "good.tar.gz")
    buf = io.BytesIO()
    np.savez(buf, **{"x": np.array([{"boom": 1}], dtype=object)})
    evil_npz = buf.getvalue()
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(tmp_path / "good.tar.gz") as tin, tarfile.open(evil, "w:gz") as tout:
        for m in tin.getmembers():
            payload = tin.extractfile(m).read()
            if m.name == "examples/golden.npz":
                payload = evil_npz
            elif m.name == "modelforge-export.json":
                manifest = json.loads(payload)
                rec = manifest["meta"]["examples"]
                rec["sha256"] = hashlib.sha256(evil_npz).hexdigest()
                rec["size"] = len(evil_npz)
                payload = json.dumps(manifest).encode()
            m.size = len(payload)
            tout.addfile(m, io.BytesIO(payload))
    r = invoke("models", "import", evil, "--name", "evil", "--json")
    assert r.exit_code == 6, r.stdout + r.stderr
    err = json.loads(r.stdout)["error"]
    assert "golden.npz" in err["message"] and "-import-" not in err["message"], err
    assert Store().versions("evil") == []


def test_cli_in_a_real_process_records_and_diffs(iris, tmp_path, isolated_store):
    """The forked paths (guarded recording, diff in predict's forked child) end to end."""
    import subprocess
    import sys

    model, data = iris
    env = {**os.environ, "MODELFORGE_HOME": str(isolated_store)}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "modelforge", *map(str, args)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    r = cli("models", "add", model, "--name", "iris", "--example", data,
            "--columns", ",".join(IRIS_NAMES))  # fmt: skip
    assert r.returncode == 0, r.stderr
    flip = gb.logreg(tmp_path / "flip.onnx", C=0.01)
    r = cli("models", "diff", "iris", flip, "--json")
    assert r.returncode == 9, r.stderr
    result = json.loads(r.stdout)["result"]
    assert result["outputs"]["output_label"]["changed_fraction"] > 0
    r = cli("models", "diff", "iris", model)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("EQUAL"), r.stderr
