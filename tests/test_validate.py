"""validate: core API on a model per failure class, and the CLI (exit codes, stderr, JSON)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import NotFoundError, UsageError
from modelforge.model.validate import CHECK_ORDER, ValidateOptions, validate_model
from tests import model_zoo as zoo
from tests.builders import add_two, identity, linear, save, with_external_data

pytestmark = pytest.mark.timeout(60)


def _statuses(report):
    return {c.name: c.status for c in report.checks}


def test_valid_model_passes_every_check(tmp_path):
    report = validate_model(save(linear(), tmp_path / "m.onnx"), ValidateOptions(reference=True))
    assert [c.name for c in report.checks] == list(CHECK_ORDER)
    # a file has no golden examples: that check is skipped (stored versions may have them)
    assert all(c.status == "pass" for c in report.checks if c.name != "examples"), report.checks
    assert report.check("examples").code == "no_examples"
    assert report.ok
    assert report.providers_used == ["cpu"]
    assert report.inferred_outputs == [
        {"name": "y", "type": "tensor(float)", "dtype": "float32", "shape": ["N", 1]}
    ]
    assert report.schema["inputs"][0]["name"] == "x"
    data = report.to_dict()
    assert data["counts"] == {"pass": 9, "warn": 0, "fail": 0, "skip": 1}
    json.dumps(data)


def test_stop_after_smoke_is_fast_for_small_models(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    report = validate_model(path, ValidateOptions(stop_after="smoke"))
    assert [c.name for c in report.checks] == list(CHECK_ORDER[:8])
    assert report.ok


def test_external_data_model(tmp_path):
    path = with_external_data(tmp_path / "ext")
    report = validate_model(path)
    assert report.ok
    ext = report.check("external_data")
    assert ext.details["files"][0]["location"] == "weights.bin"


def test_external_data_escape_fails_and_later_checks_skip(tmp_path):
    import onnx  # onnx refuses to write '..' locations, so edit the reference by hand

    model = onnx.load(with_external_data(tmp_path / "ok"), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    path = tmp_path / "ok" / "evil.onnx"
    onnx.save_model(model, path)
    report = validate_model(path)
    st = _statuses(report)
    assert st["external_data"] == "fail"
    assert report.check("external_data").code == "unsafe_external_data"
    assert st["session"] == "skip" and st["smoke"] == "skip"
    assert not report.ok


def test_opset_6_warns_with_convert_hint(tmp_path):
    report = validate_model(save(add_two(opset=6), tmp_path / "old.onnx"))
    session = report.check("session")
    assert session.status == "warn" and session.code == "opset_too_old"
    assert "modelforge convert" in session.hint
    assert report.check("smoke").status == "pass"
    assert report.ok
    strict = validate_model(tmp_path / "old.onnx", ValidateOptions(strict=True))
    assert not strict.ok


def test_custom_domain_lists_ops_and_never_loads_anything(tmp_path):
    report = validate_model(save(zoo.custom_domain(), tmp_path / "c.onnx"))
    check = report.check("runtime_compat")
    assert check.status == "fail" and check.code == "custom_ops_required"
    assert "com.example: FancyOp (1)" in check.message
    assert "--custom-ops" in check.hint
    assert report.check("session").status == "skip"


def test_zipmap_classifier(tmp_path):
    path = zoo.zipmap_classifier(tmp_path / "clf.onnx")
    report = validate_model(path)
    assert report.ok, report.checks
    outputs = {o["name"]: o for o in report.check("smoke").details["outputs"]}
    assert outputs["output_probability"]["type"] == "seq(map(int64,tensor(float)))"
    assert outputs["output_probability"]["python_type"] == "list"


def test_ir3_initializers_as_inputs(tmp_path):
    report = validate_model(save(zoo.ir3_initializers_as_inputs(), tmp_path / "ir3.onnx"))
    assert report.ok, report.checks
    assert [s["name"] for s in report.schema["inputs"]] == ["x"]
    assert [s["name"] for s in report.schema["overridable_initializers"]] == ["W", "B"]


def test_string_inputs(tmp_path):
    report = validate_model(save(zoo.string_input(), tmp_path / "s.onnx"))
    assert report.ok, report.checks
    assert report.check("smoke").details["outputs"][0]["shape"] == [1]


@pytest.mark.parametrize(
    ("builder", "code", "named"),
    [
        (zoo.cycle, "graph_cycle", "node '"),
        (zoo.undefined_input, "undefined_input", "ghost"),
        (zoo.duplicate_outputs, "duplicate_output", "'y'"),
        (zoo.negative_dims, "negative_dim", "-3"),
    ],
)
def test_structure_failures(tmp_path, builder, code, named):
    report = validate_model(save(builder(), tmp_path / "bad.onnx"))
    check = report.check("structure")
    assert (check.status, check.code) == ("fail", code)
    assert named in check.message
    assert _statuses(report)["shapes"] == "skip"


def test_nesting_cap(tmp_path):
    path = save(zoo.nested_ifs(5), tmp_path / "deep.onnx")
    assert validate_model(path, ValidateOptions(stop_after="structure")).ok
    report = validate_model(path, ValidateOptions(max_depth=3, stop_after="structure"))
    assert report.check("structure").code == "nesting_too_deep"


def test_ir_version_too_new(tmp_path):
    report = validate_model(save(zoo.ir_too_new(), tmp_path / "new.onnx"))
    assert report.check("structure").code == "ir_too_new"  # newer than onnx knows, not "invalid"
    compat = report.check("runtime_compat")
    assert (compat.status, compat.code) == ("fail", "ir_too_new")
    assert "IR version 99" in compat.message
    assert not report.ok


def test_nan_output_warns(tmp_path):
    report = validate_model(save(zoo.nan_output(), tmp_path / "nan.onnx"))
    smoke = report.check("smoke")
    assert (smoke.status, smoke.code) == ("warn", "nan_or_inf")
    assert report.ok


def test_declared_output_type_mismatch_fails(tmp_path):
    report = validate_model(save(zoo.wrong_declared_dtype(), tmp_path / "lie.onnx"))
    assert report.check("shapes").code == "shape_inference_failed"
    assert "elem type" in report.check("shapes").message
    assert report.check("session").status == "fail"  # onnxruntime refuses it too


def test_declared_output_rank_mismatch_caught_by_smoke_run(tmp_path):
    report = validate_model(save(zoo.wrong_declared_rank(), tmp_path / "rank.onnx"))
    assert report.check("shapes").status == "fail"
    assert report.check("session").status == "pass"  # onnxruntime does not check ranks
    smoke = report.check("smoke")
    assert (smoke.status, smoke.code) == ("fail", "output_mismatch")
    assert smoke.message == "output 'y' has rank 2, declared 3"


def test_not_onnx_and_empty_files(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    report = validate_model(tmp_path / "empty.onnx")
    assert report.check("file").code == "empty_file"
    (tmp_path / "zip.onnx").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    report = validate_model(tmp_path / "zip.onnx")
    assert report.check("parse").code == "not_onnx"
    assert "zip" in report.check("parse").message


def test_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    report = validate_model(fifo)
    assert report.check("file").code == "not_a_regular_file"


def test_missing_model_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        validate_model(tmp_path / "nope.onnx")


def test_golden_parity_pass_and_fail(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    import onnx
    from onnx.reference import ReferenceEvaluator

    (y,) = ReferenceEvaluator(onnx.load(path)).run(None, {"x": x})
    np.savez(tmp_path / "in.npz", x=x)
    np.savez(tmp_path / "good.npz", y=y)
    np.savez(tmp_path / "bad.npz", y=y + 0.5)
    opts = ValidateOptions(inputs=str(tmp_path / "in.npz"), expected=str(tmp_path / "good.npz"))
    good = validate_model(path, opts)
    assert good.check("parity").status == "pass", good.check("parity")
    bad = validate_model(
        path, ValidateOptions(inputs=str(tmp_path / "in.npz"), expected=str(tmp_path / "bad.npz"))
    )
    parity = bad.check("parity")
    assert (parity.status, parity.code) == ("fail", "parity_mismatch")
    assert "max abs error 0.5" in parity.message
    assert parity.details["outputs"][0]["max_abs"] == pytest.approx(0.5, abs=1e-5)


def test_object_arrays_in_npz_are_refused(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "exp.npz", y=np.zeros((1, 1), np.float32))
    report = validate_model(
        path,
        ValidateOptions(inputs=str(tmp_path / "evil.npz"), expected=str(tmp_path / "exp.npz")),
    )
    assert report.check("parity").code == "npz_object_array"
    assert not marker.exists()


def test_bad_options():
    with pytest.raises(UsageError):
        validate_model("whatever.onnx", ValidateOptions(stop_after="nonsense"))
    with pytest.raises(UsageError):
        validate_model("whatever.onnx", ValidateOptions(inputs="a.npz"))


def test_timeout_fails_the_running_check(tmp_path, monkeypatch):
    path = save(linear(), tmp_path / "m.onnx")
    report = validate_model(path, ValidateOptions(timeout_s=0.001))
    failed = report.failed
    assert failed and failed[0].code == "timeout"
    assert report.check("file").status == "pass"


# ---- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_ok_exit_0(tmp_path):
    path = save(identity(), tmp_path / "m.onnx")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.stderr
    assert "OK: 8 passed" in result.stdout
    assert result.stderr == ""


def test_cli_failure_exit_9_one_line_stderr(tmp_path):
    path = save(zoo.cycle(), tmp_path / "cycle.onnx")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 9
    assert "FAIL  structure" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cycle" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_json_envelope(tmp_path):
    path = save(zoo.undefined_input(), tmp_path / "u.onnx")
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 9
    env = json.loads(result.stdout)
    assert env["status"] == "error" and env["command"] == "validate"
    assert env["error"]["code"] == "undefined_input"
    assert env["result"]["checks"][3]["code"] == "undefined_input"
    ok = runner.invoke(app, ["validate", str(save(linear(), tmp_path / "l.onnx")), "--json"])
    assert json.loads(ok.stdout)["status"] == "ok"


def test_cli_strict_and_dims_and_missing(tmp_path):
    old = save(add_two(opset=6), tmp_path / "old.onnx")
    assert runner.invoke(app, ["validate", str(old)]).exit_code == 0
    assert runner.invoke(app, ["validate", str(old), "--strict"]).exit_code == 9
    ok = runner.invoke(app, ["validate", str(old), "--dim", "N=3", "--json"])
    smoke = json.loads(ok.stdout)["result"]["checks"][7]
    assert smoke["details"]["inputs"] == {"a": [3, 3], "b": [3, 3]}
    bad_dim = runner.invoke(app, ["validate", str(old), "--dim", "N=x"])
    assert bad_dim.exit_code == 2 and "--dim" in bad_dim.stderr
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 3


def test_cli_providers(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    unknown = runner.invoke(app, ["validate", str(path), "--provider", "warp-drive"])
    assert unknown.exit_code == 2 and "unknown execution provider" in unknown.stderr
    import onnxruntime as ort

    from modelforge.engine.providers import SHORT_NAMES

    absent = next(k for k, v in SHORT_NAMES.items() if v not in ort.get_available_providers())
    required = runner.invoke(
        app, ["validate", str(path), "--provider", absent, "--require-provider", "--json"]
    )
    assert required.exit_code == 9
    assert json.loads(required.stdout)["error"]["code"] == "provider_unavailable"
    fallback = runner.invoke(app, ["validate", str(path), "--provider", absent, "--json"])
    assert fallback.exit_code == 0
    session = json.loads(fallback.stdout)["result"]["checks"][6]
    assert (session["status"], session["code"]) == ("warn", "provider_fallback")
    assert session["details"]["providers_used"] == ["cpu"]


def test_hard_linked_external_data_only_for_trusted_origin(tmp_path):
    path = with_external_data(tmp_path / "ext")
    os.link(tmp_path / "ext" / "weights.bin", tmp_path / "linked.bin")
    untrusted = validate_model(path)
    ext = untrusted.check("external_data")
    assert ext.status == "fail" and "hard link" in ext.message
    trusted = validate_model(path, ValidateOptions(trusted=True))
    assert trusted.ok, trusted.failed


def test_progress_names_each_check(tmp_path):
    seen = []
    validate_model(save(linear(), tmp_path / "m.onnx"), progress=seen.append)
    assert seen == list(CHECK_ORDER[1:8])


def test_store_reference_is_resolved_and_trusted(tmp_path):
    src = with_external_data(tmp_path / "src")
    added = runner.invoke(app, ["models", "add", str(src), "--name", "ext"])
    assert added.exit_code == 0, added.stderr
    import modelforge

    report = modelforge.validate_model("ext:1")  # the public API resolves the reference
    assert report.model == "ext:1"
    assert report.ok, report.failed  # the store's hard-linked blobs are accepted
    result = runner.invoke(app, ["validate", "ext", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["result"]["model"] == "ext:1"


def test_allocation_bomb_is_a_memory_limit_failure(tmp_path):
    report = validate_model(save(zoo.expand_bomb(), tmp_path / "bomb.onnx"))
    smoke = report.check("smoke")
    assert (smoke.status, smoke.code) == ("fail", "memory_limit")
    assert "onnxruntime_src" not in smoke.message and "Expand" in smoke.message


def test_custom_ops_library_only_loaded_when_passed(tmp_path):
    model = save(zoo.custom_domain(), tmp_path / "c.onnx")
    bogus = tmp_path / "libnot_a_library.so"
    bogus.write_bytes(b"not an ELF file")
    report = validate_model(model, ValidateOptions(custom_ops=(str(bogus),)))
    assert report.check("runtime_compat").code == "custom_ops_loaded"
    session = report.check("session")
    assert session.status == "fail" and "custom-op library" in session.message
    missing = runner.invoke(app, ["validate", str(model), "--custom-ops", str(tmp_path / "no.so")])
    assert missing.exit_code == 3 and "no.so" in missing.stderr


def test_parent_never_imports_onnx_or_onnxruntime(tmp_path):
    """Risky work stays in the child; the parent stays single-purpose and fork-safe."""
    import subprocess
    import sys

    path = save(linear(), tmp_path / "m.onnx")
    code = (
        "import sys\n"
        "from modelforge.model.validate import validate_model\n"
        f"r = validate_model({str(path)!r})\n"
        "print(r.ok, 'onnxruntime' in sys.modules, 'onnx' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["True", "False", "False"]


_CRASH_SCRIPT = """
import ctypes, json, sys
from modelforge.model.checks import runner as check_runner
from modelforge.model.validate import validate_model

def _segfault(ctx):
    ctypes.string_at(0)

check_runner.CHECKS["shapes"] = _segfault  # the sandbox child is forked from this process
report = validate_model(sys.argv[1])
print(json.dumps(report.to_dict()))
"""


@pytest.mark.timeout(120)
def test_crash_in_a_check_keeps_earlier_results(tmp_path):
    """A segfault inside onnx (simulated in the shapes check) fails that check only.

    Runs in a fresh interpreter: the patched check must reach a forked child, and forking
    is only safe from a parent without native thread pools (see engine/isolate.py).
    """
    import subprocess
    import sys

    path = save(linear(), tmp_path / "m.onnx")
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["parse"]["status"] == checks["structure"]["status"] == "pass"
    shapes = checks["shapes"]
    assert (shapes["status"], shapes["code"]) == ("fail", "crashed")
    assert "SIGSEGV" in shapes["message"] and "'shapes' check" in shapes["message"]
    assert checks["runtime_compat"]["status"] == "skip"
    assert checks["session"]["status"] == "skip"
    assert report["schema"]["inputs"][0]["name"] == "x"  # streamed before the crash


@pytest.mark.parametrize(
    ("got", "want", "ok"),
    [
        ([np.nan, 1.0], [np.nan, 1.0], True),  # NaN on both sides is equal (as diff says)
        ([np.inf, -np.inf], [np.inf, -np.inf], True),
        ([np.nan, 1.0], [1.0, 1.0], False),
        ([1.0, 1.0], [np.nan, 1.0], False),
        ([np.inf, 1.0], [-np.inf, 1.0], False),  # rtol x inf must not excuse it
        ([np.inf, 1.0], [1e308, 1.0], False),
        ([1.0, 2.0], [1.0, 2.5], False),
        ([1.0, 2.0], [1.0, 2.00001], True),
    ],
)
def test_parity_compares_nan_and_infinities_as_values(got, want, ok):
    from modelforge.model.checks.parity import compare

    entry = compare("y", np.array(got), np.array(want), 1e-5, 1e-6)
    assert entry["ok"] is ok, entry
    if not ok:  # the failure's numbers say so (not "max abs error 0")
        assert entry["max_abs"] > 0


def test_validate_passes_nan_outputs_that_match_the_expected_nan(tmp_path):
    model = save(identity(shape=("N", 3)), tmp_path / "ident.onnx")
    x = np.array([[np.nan, 1.0, 2.0]], dtype=np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    np.savez(tmp_path / "exp.npz", out=x)
    report = validate_model(
        str(model),
        ValidateOptions(
            inputs=str(tmp_path / "in.npz"), expected=str(tmp_path / "exp.npz")
        ),  # fmt: skip
    )
    parity = next(c for c in report.checks if c.name == "parity")
    assert parity.status == "pass", parity
