"""Second fresh-eyes audit: defects found by following the docs and feeding hostile inputs to
validate, inspect, convert, bench, the store and diff. One test per defect fixed."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import InvalidModelError, UsageError
from modelforge.model.convert import convert_model
from tests.builders import linear, save

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _no_outputs() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# ---- validate ---------------------------------------------------------------------------------


def test_validate_model_without_outputs_fails_structure_not_smoke(tmp_path):
    path = save(_no_outputs(), tmp_path / "noout.onnx")
    result = _invoke("validate", str(path), "--json")
    assert result.exit_code == 9
    checks = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}
    assert checks["structure"]["status"] == "fail"
    assert checks["structure"]["code"] == "no_outputs"
    assert "declares no outputs" in checks["structure"]["message"]
    assert checks["smoke"]["status"] == "skip"


def test_validate_ir_newer_than_onnx_names_the_versions_not_the_converter(tmp_path):
    model = linear()
    model.ir_version = onnx.IR_VERSION + 80
    path = save(model, tmp_path / "future.onnx")
    result = _invoke("validate", str(path), "--json")
    assert result.exit_code == 9
    checks = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}
    structure = checks["structure"]
    assert structure["code"] == "ir_too_new"
    assert f"IR version {onnx.IR_VERSION + 80}" in structure["message"]
    assert "converter" not in structure["hint"] and "upgrade onnx" in structure["hint"]
    assert checks["runtime_compat"]["code"] == "ir_too_new"


# ---- convert ----------------------------------------------------------------------------------


def test_convert_below_an_ops_lowest_adapter_names_the_op_and_the_floor(tmp_path):
    src = save(linear(opset=17), tmp_path / "m.onnx")  # MatMul + Add: no adapters down to 7
    with pytest.raises(InvalidModelError) as err:
        convert_model(src, 7, tmp_path / "m7.onnx")
    found = re.search(r"no adapter that takes (MatMul|Add) below opset (\d+)$", err.value.message)
    assert found, err.value.message
    assert "Assertion" not in err.value.message and "$" not in err.value.message
    assert f"--opset {found.group(2)} or higher" in (err.value.hint or "")
    assert not (tmp_path / "m7.onnx").exists()


def test_convert_to_an_opset_onnx_does_not_know_is_a_usage_error(tmp_path):
    from onnx.defs import onnx_opset_version

    src = save(linear(), tmp_path / "m.onnx")
    out = tmp_path / "far.onnx"
    result = _invoke("convert", str(src), "--opset", str(onnx_opset_version() + 50), "-o", str(out))
    assert result.exit_code == 2
    assert f"ai.onnx opsets 1-{onnx_opset_version()}" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_convert_refuses_to_overwrite_the_inputs_external_data(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    # the input's data file is named exactly what the output's data file would be
    onnx.save(
        linear(), folder / "a.onnx", save_as_external_data=True, location="b.onnx.data",
        size_threshold=0,
    )  # fmt: skip
    before = (folder / "b.onnx.data").read_bytes()
    with pytest.raises(UsageError) as err:
        convert_model(folder / "a.onnx", 18, folder / "b.onnx")
    assert "input model's own external-data file" in err.value.message
    assert (folder / "b.onnx.data").read_bytes() == before
    assert not (folder / "b.onnx").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.onnx", "b.onnx.data"]


# ---- store: names, versions, unwritable stores ------------------------------------------------


@pytest.mark.parametrize("ref", ["m:²", "m:٣", "m:３"])
def test_non_ascii_digit_selectors_are_refused_not_a_crash(tmp_path, ref):
    save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(tmp_path / "m.onnx"), "--name", "m").exit_code == 0
    result = _invoke("models", "show", ref)
    assert result.exit_code == 2, result.stderr  # '３' used to read as version 3, '²' crashed
    assert "invalid alias" in result.stderr and "internal error" not in result.stderr


def test_explicit_version_beyond_the_limit_is_refused(tmp_path):
    from modelforge.store.names import MAX_VERSION

    src = save(linear(), tmp_path / "m.onnx")
    result = _invoke("models", "add", str(src), "--name", "m", "--version", str(MAX_VERSION + 1))
    assert result.exit_code == 2
    assert f"versions are 1 to {MAX_VERSION}" in result.stderr
    assert _invoke("models", "list", "--json").stdout.count('"version"') == 0


def test_import_ignores_a_boolean_or_huge_version_in_the_manifest(tmp_path):
    import tarfile

    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    archive = tmp_path / "m.tar.gz"
    assert _invoke("models", "export", "m:1", "-o", str(archive)).exit_code == 0
    for i, bad in enumerate([True, 10**30]):
        edited = tmp_path / f"edited{i}.tar.gz"
        with tarfile.open(archive) as tin, tarfile.open(edited, "w:gz") as tout:
            for member in tin:
                data = tin.extractfile(member).read()
                if member.name == "modelforge-export.json":
                    doc = json.loads(data)
                    doc["meta"]["version"] = bad
                    data = json.dumps(doc).encode()
                    member.size = len(data)
                import io

                tout.addfile(member, io.BytesIO(data))
        result = _invoke("models", "import", str(edited), "--name", f"n{i}", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["result"]["version"] == 1  # not true, not 10**30


def test_invalid_name_hint_suggests_a_valid_spelling_and_alias_example(tmp_path):
    src = save(linear(), tmp_path / "m.onnx")
    result = _invoke("models", "add", str(src), "--name", "Churn Model")
    assert result.exit_code == 2 and "did you mean 'churn-model'?" in result.stderr
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    result = _invoke("models", "tag", "m:1", "Prod")
    assert result.exit_code == 2
    assert "e.g. prod" in result.stderr and "iris-classifier" not in result.stderr


def test_store_root_under_a_file_is_named_for_add_and_list(tmp_path, monkeypatch):
    src = save(linear(), tmp_path / "m.onnx")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for root in (afile, afile / "sub"):
        monkeypatch.setenv("MODELFORGE_HOME", str(root))
        for args in (["models", "add", str(src), "--name", "m"], ["models", "list"]):
            result = _invoke(*args)
            assert result.exit_code == 6, result.stderr
            assert "is not a folder" in result.stderr, result.stderr
            assert "free disk space" not in result.stderr
    assert afile.read_text() == "x"


@pytest.mark.parametrize(
    "args",
    [
        ["models", "tag", "m:1", "prod"],
        ["models", "untag", "m", "prod"],
        ["models", "set", "m:1", "-d", "new"],
        ["models", "rm", "m:1", "--yes"],
    ],
)
def test_writes_into_an_unwritable_store_are_store_errors_not_bugs(tmp_path, store_root, args):
    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m", "--alias", "prod").exit_code == 0
    # the lock folder replaced by a file: every write fails with an OSError, even as root
    import shutil

    shutil.rmtree(store_root / "locks")
    (store_root / "locks").write_text("")
    result = _invoke(*args, "--json")
    assert result.exit_code == 6, result.stdout
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "store_write_failed", error
    assert "nothing was changed" in error["hint"]
    assert json.loads(_invoke("models", "show", "m:1", "--json").stdout)["result"]


def _tiny_tmpfs(path, size: str):
    import subprocess

    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): a full disk cannot be simulated")


def test_import_onto_a_full_disk_blames_the_disk_not_the_archive(tmp_path, monkeypatch):
    import subprocess

    big = onnx.helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512])],
            [numpy_helper.from_array(np.random.default_rng(0).random((64, 512), np.float32), "W")],
        ),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
    )  # fmt: skip
    src = save(big, tmp_path / "big.onnx")
    assert _invoke("models", "add", str(src), "--name", "big").exit_code == 0
    archive = tmp_path / "big.tar.gz"
    assert _invoke("models", "export", "big", "-o", str(archive)).exit_code == 0
    tiny = tmp_path / "tiny"
    _tiny_tmpfs(tiny, "64k")
    try:
        monkeypatch.setenv("MODELFORGE_HOME", str(tiny / "store"))
        result = _invoke("models", "import", str(archive), "--json")
        assert result.exit_code == 6, result.stdout
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "store_write_failed" and "No space left" in error["message"]
        assert list((tiny / "store" / "tmp").iterdir()) == []
        assert not (tiny / "store" / "models" / "big").exists()
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


# ---- diff -------------------------------------------------------------------------------------


def _two_in() -> onnx.ModelProto:
    """y = x + 1 on float [N, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _fails_at_run_time() -> onnx.ModelProto:
    """float [N, 2] reshaped to [3, 3]: onnxruntime fails on every input."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])],
        [numpy_helper.from_array(np.array([3, 3], np.int64), "s")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_diff_against_a_removed_version_says_it_was_removed(tmp_path):
    a = save(_two_in(), tmp_path / "a.onnx")
    b = save(linear(), tmp_path / "b.onnx")
    for src in (a, b):
        assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    assert _invoke("models", "rm", "m:1", "--yes").exit_code == 0
    result = _invoke("models", "diff", "m:1", "m:2", "--json")
    assert result.exit_code == 3
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "version_not_found"
    assert "was removed" in error["message"] and error["hint"] == "versions: 2"


def test_diff_data_mapping_hint_names_no_predict_only_options(tmp_path):
    a = save(_two_in(), tmp_path / "a.onnx")
    data = tmp_path / "d.csv"
    data.write_text("p,q,r\n1,2,3\n")
    result = _invoke("models", "diff", str(a), str(a), "--data", str(data), "--json")
    assert result.exit_code == 5
    error = json.loads(result.stdout)["error"]
    assert error["message"].startswith("--data cannot be mapped onto A")
    hint = error["hint"]
    assert "--columns a,b" in hint and "models set" in hint and "--explain" in hint
    assert "--map" not in hint  # predict's options are named only through 'models set'/predict
    assert "modelforge predict" in hint


@pytest.mark.parametrize("source", ["data", "examples"])
def test_diff_runtime_failure_names_the_failing_side(tmp_path, source):
    a = save(_two_in(), tmp_path / "a.onnx")
    b = save(_fails_at_run_time(), tmp_path / "b.onnx")
    data = tmp_path / "d.csv"
    data.write_text("p,q\n1,2\n3,4\n")
    add = ["models", "add", str(a), "--name", "a", "--columns", "p,q"]
    assert _invoke(*add, "--example", str(data)).exit_code == 0
    extra = ["--data", str(data)] if source == "data" else []
    result = _invoke("models", "diff", "a", str(b), *extra, "--json")
    assert result.exit_code == 7, result.stdout
    error = json.loads(result.stdout)["error"]
    assert error["message"].startswith(f"B ({b}): "), error["message"]
    assert "Reshape" in error["message"]


def _identity(shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(
    ("shape", "dims", "hint"),
    [
        ([1_000_000, 1_000_000], [], "fixed shape"),
        (["N", 4], ["--dim", "N=100000000000"], "smaller --dim"),
    ],
)
def test_validate_refuses_to_synthesize_terabytes_with_a_clear_skip(tmp_path, shape, dims, hint):
    path = save(_identity(shape), tmp_path / "big.onnx")
    result = _invoke("validate", str(path), *dims, "--json")
    # used to be exit 8 "the model asks for absurd allocations" after numpy hit the cap
    assert result.exit_code == 0, result.stdout
    smoke = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}["smoke"]
    assert (smoke["status"], smoke["code"]) == ("skip", "synthesized_too_large")
    assert "input 'x'" in smoke["message"] and "TiB" in smoke["message"]
    assert hint in smoke["hint"]


def test_validate_warns_about_a_dim_the_model_does_not_have(tmp_path):
    path = save(_identity(["batch", 2]), tmp_path / "m.onnx")
    result = _invoke("validate", str(path), "--dim", "N=4", "--json")
    assert result.exit_code == 0
    smoke = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}["smoke"]
    assert (smoke["status"], smoke["code"]) == ("warn", "unknown_dim")
    assert "--dim N names no symbolic dimension" in smoke["message"] and "batch" in smoke["message"]
    assert _invoke("validate", str(path), "--dim", "N=4", "--strict").exit_code == 9
    ok = _invoke("validate", str(path), "--dim", "batch=4", "--json")
    smoke = {c["name"]: c for c in json.loads(ok.stdout)["result"]["checks"]}["smoke"]
    assert smoke["status"] == "pass" and "[4, 2]" in smoke["message"]


# ---- bench ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--duration", "1e308"], "--duration must be a positive number of seconds, at most"),
        (["--seed", "-1", "--runs", "1"], "--seed must be 0 to"),
        (["--runs", "99999999999999999999"], "--runs must be 1 to 10,000,000"),
        (["--runs", "1", "--warmup", "99999999999999999999"], "--warmup must be 0 to"),
        (["--runs", "1", "--rounds", "99999999999"], "--rounds must be 1 to 1,000"),
    ],
)
def test_bench_out_of_range_options_are_usage_errors(tmp_path, args, needle):
    """--duration 1e308 and --seed -1 were internal errors; --runs/--warmup 1e20 ran forever."""
    src = save(linear(), tmp_path / "m.onnx")
    result = _invoke("bench", str(src), *args)
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "internal error" not in result.stderr
    assert result.stdout == ""


def test_bench_model_without_outputs_is_refused_before_running(tmp_path):
    path = save(_no_outputs(), tmp_path / "noout.onnx")
    result = _invoke("bench", str(path), "--runs", "2", "--json")
    assert result.exit_code == 4
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "no_outputs" and "declares no outputs" in error["message"]


# ---- convert: models that cannot run ----------------------------------------------------------


def test_convert_model_failing_at_run_time_is_a_runtime_error_not_a_bug(tmp_path):
    src = save(_fails_at_run_time(), tmp_path / "rt.onnx")
    out = tmp_path / "rt18.onnx"
    result = _invoke("convert", str(src), "--opset", "18", "-o", str(out), "--json")
    assert result.exit_code == 7, result.stdout  # was exit 1, "a bug in ModelForge"
    error = json.loads(result.stdout)["error"]
    assert "running the original model on synthesized inputs" in error["message"]
    assert "Reshape" in error["message"] and "bug" not in (error["hint"] or "")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["rt.onnx"]


def test_convert_model_without_outputs_is_refused(tmp_path):
    src = save(_no_outputs(), tmp_path / "noout.onnx")
    out = tmp_path / "n18.onnx"
    result = _invoke("convert", str(src), "--opset", "18", "-o", str(out))
    assert result.exit_code == 4, result.stderr  # was exit 1
    assert "declares no outputs" in result.stderr and not out.exists()


@pytest.mark.parametrize(
    ("marker", "code"),
    [
        ('{"format": "modelforge-store", "schema_version": 99}', "store_too_new"),
        ('{"format": "something-else"}', "store_corrupt"),
        ("not json", "store_corrupt"),
    ],
)
def test_a_store_marker_from_a_newer_modelforge_or_another_tool_is_refused(
    tmp_path, store_root, marker, code
):
    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    (store_root / "store.json").write_text(marker)  # was never read: a newer store was written
    for args in (["models", "list"], ["models", "add", str(src), "--name", "n"], ["inspect", "m"]):
        result = _invoke(*args, "--json")
        assert result.exit_code == 6, (args, result.stdout)
        assert json.loads(result.stdout)["error"]["code"] == code
    assert not (store_root / "models" / "n").exists()


# ---- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.onnx", "backup.zip", "-"])
def test_export_never_overwrites_a_non_archive_name(tmp_path, name, monkeypatch):
    src = save(linear(), tmp_path / "model.onnx")
    before = src.read_bytes()
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = _invoke("models", "export", "m", "-o", name)
    assert result.exit_code == 2, result.stderr
    assert ".tar.gz" in result.stderr
    assert src.read_bytes() == before  # '-o model.onnx' replaced the model with an archive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert _invoke("models", "export", "m", "-o", "m.tgz").exit_code == 0


# ---- models set -------------------------------------------------------------------------------


def test_columns_from_a_binary_file_names_the_file_not_a_column_count(tmp_path):
    src = save(_identity(["N", 4]), tmp_path / "m.onnx")
    line = src.read_bytes().split(b"\n", 1)[0]
    assert line.decode("utf-8")  # valid UTF-8 up to the first newline: read as a header
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    result = _invoke("models", "set", "m:1", "--columns-from", str(src))
    assert result.exit_code == 5, result.stderr  # was "--columns names 1 column(s)" (exit 2)
    assert "m.onnx" in result.stderr and "not a text header" in result.stderr


def test_set_and_unset_the_same_label_is_a_usage_error(tmp_path):
    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m", "-l", "k=old").exit_code == 0
    result = _invoke("models", "set", "m:1", "--label", "k=v", "--unset-label", "k")
    assert result.exit_code == 2 and "both set (--label) and removed" in result.stderr
    shown = json.loads(_invoke("models", "show", "m:1", "--json").stdout)["result"]
    assert shown["metadata"]["labels"] == {"k": "old"}


# ---- resolving references ---------------------------------------------------------------------


def test_a_folder_named_like_a_stored_model_does_not_hide_it(tmp_path, monkeypatch):
    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "churn").exit_code == 0
    work = tmp_path / "work"
    (work / "churn").mkdir(parents=True)  # the project folder next to the user
    (work / "other").mkdir()
    monkeypatch.chdir(work)
    result = _invoke("inspect", "churn", "--json")
    assert result.exit_code == 0, result.stderr  # was "model file 'churn' is a directory"
    assert json.loads(result.stdout)["result"]["ref"] == "churn:1"
    for ref in ("./churn", "other"):  # an explicit path, or no such stored model: the folder
        result = _invoke("inspect", ref)
        assert result.exit_code == 4 and "is a directory" in result.stderr


# ---- validate: a crash in the guarded child ---------------------------------------------------


def test_a_crashing_custom_op_library_is_named_in_the_hint_not_validate_itself(tmp_path):
    import shutil
    import subprocess

    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build a crashing library")
    source = tmp_path / "crash.c"
    source.write_text(
        "#include <signal.h>\n"
        "__attribute__((constructor)) static void boom(void) { raise(SIGSEGV); }\n"
    )
    lib = tmp_path / "crash.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    model = save(linear(), tmp_path / "m.onnx")
    result = _invoke("validate", str(model), "--custom-ops", str(lib), "--json")
    assert result.exit_code == 8, result.stdout
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "crashed" and "SIGSEGV" in error["message"]
    assert "--custom-ops" in error["hint"] and "modelforge validate" not in error["hint"]


def test_the_crash_hint_without_custom_ops_is_not_circular():
    from modelforge.errors import ResourceLimitError
    from modelforge.model.checks.types import ValidateOptions
    from modelforge.model.validate import _crash_hint

    err = ResourceLimitError("boom", hint="... or run 'modelforge validate MODEL'", code="crashed")
    hint = _crash_hint(err, ValidateOptions())
    assert "re-export" in hint and "modelforge validate" not in hint
    timeout = ResourceLimitError("slow", hint="raise --timeout", code="timeout")
    assert _crash_hint(timeout, ValidateOptions()) == "raise --timeout"


def test_bench_warns_about_a_dim_the_model_does_not_have(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "seq"])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = save(model, tmp_path / "m.onnx")
    result = _invoke("bench", str(path), "--dim", "sequence=8", "--runs", "2", "--batch-sizes", "1")
    assert result.exit_code == 0, result.stderr
    assert "--dim sequence names no symbolic dimension" in result.stderr
    assert "its dims: N, seq" in result.stderr
    quiet = _invoke("bench", str(path), "--dim", "seq=8", "--runs", "2", "--batch-sizes", "1")
    assert quiet.exit_code == 0 and "names no symbolic dimension" not in quiet.stderr


def test_bench_data_mapping_hint_names_no_bench_less_option(tmp_path):
    src = save(linear(), tmp_path / "m.onnx")
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    result = _invoke("bench", str(src), "--data", str(data), "--runs", "2")
    assert result.exit_code == 5
    assert "modelforge predict MODEL DATA --explain" in result.stderr
    assert "; --explain" not in result.stderr


def test_bench_model_with_a_huge_fixed_shape_does_not_blame_batch_sizes(tmp_path):
    path = save(_identity([1_000_000, 1_000_000]), tmp_path / "huge.onnx")
    result = _invoke("bench", str(path), "--runs", "1")
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "fixes its batch dimension at 1000000" in line and "--data" in line
    assert "--batch-sizes" not in line  # it has none to change


# ---- models rm --------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["m:2", "m:prod", "m:latest"])
def test_rm_all_with_a_version_is_refused_not_everything_removed(tmp_path, ref):
    for i, model in enumerate([linear(), _two_in(), _identity(["N", 3])]):
        src = save(model, tmp_path / f"m{i}.onnx")
        assert _invoke("models", "add", str(src), "--name", "m", "-a", f"a{i}").exit_code == 0
    assert _invoke("models", "tag", "m:2", "prod").exit_code == 0
    result = _invoke("models", "rm", ref, "--all", "--yes")
    assert result.exit_code == 2, result.stdout  # 'm:2 --all --yes' removed m:1, m:2 and m:3
    assert "names one version" in result.stderr
    listed = json.loads(_invoke("models", "list", "m", "--json").stdout)["result"]["models"]
    assert sorted(v["version"] for v in listed) == [1, 2, 3]
    assert _invoke("models", "show", "m:1").exit_code == 0
    assert _invoke("models", "show", "m:3").exit_code == 0


@pytest.mark.parametrize("args", [["models", "untag", "m:1", "prod"], ["models", "list", "m:1"]])
def test_a_reference_where_a_bare_name_is_expected_gets_a_plain_hint(tmp_path, args):
    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m", "-a", "prod").exit_code == 0
    result = _invoke(*args)
    # untag suggested "did you mean 'm-1'?"; list ignored ':1' and listed every version
    assert result.exit_code == 2, result.stdout
    assert "takes a bare model NAME" in result.stderr and "pass 'm'" in result.stderr
    assert "m-1" not in result.stderr


# ---- models add --example ---------------------------------------------------------------------


def test_example_rows_without_example_is_a_usage_error(tmp_path, store_root):
    src = save(linear(), tmp_path / "m.onnx")
    result = _invoke("models", "add", str(src), "--name", "m", "--example-rows", "5")
    assert result.exit_code == 2, result.stderr  # was silently ignored
    assert "--example-rows needs --example DATA" in result.stderr
    assert not (store_root / "models" / "m").exists()


def test_example_errors_say_they_come_from_the_examples_and_name_add_options(tmp_path):
    src = save(linear(), tmp_path / "m.onnx")
    data = tmp_path / "d.csv"
    data.write_text("p,q\n1,2\n")
    result = _invoke("models", "add", str(src), "--name", "m", "--example", str(data), "--json")
    assert result.exit_code == 5, result.stdout
    error = json.loads(result.stdout)["error"]
    assert error["message"].startswith("recording golden examples (--example): ")
    assert "--map" not in error["hint"] and "--columns a,b" in error["hint"]
    assert "--explain" in error["hint"] and "modelforge predict" in error["hint"]
    assert _invoke("models", "list", "m", "--json").exit_code == 0
    assert json.loads(_invoke("models", "list", "--json").stdout)["result"]["models"] == []


def test_example_run_failure_is_named_and_nothing_is_stored(tmp_path):
    src = save(_fails_at_run_time(), tmp_path / "rt.onnx")
    data = tmp_path / "d.csv"
    data.write_text("p,q\n1,2\n")
    add = ["models", "add", str(src), "--name", "rt", "--force", "--example", str(data)]
    result = _invoke(*add, "--json")
    assert result.exit_code == 7, result.stdout
    assert json.loads(result.stdout)["error"]["message"].startswith("recording golden examples")
    assert json.loads(_invoke("models", "list", "--json").stdout)["result"]["models"] == []


# ---- external data through a symlinked model --------------------------------------------------


def test_a_symlinked_model_missing_its_data_explains_where_data_is_looked_up(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    onnx.save(linear(), real / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    link = tmp_path / "link.onnx"
    link.symlink_to(real / "m.onnx")
    for args in (["validate", str(link)], ["models", "add", str(link), "--name", "m"]):
        result = _invoke(*args)
        assert result.exit_code in (4, 9), result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert "'w.bin' does not exist" in line
        assert f"is a symlink to '{real / 'm.onnx'}'" in line and "next to the path given" in line
    assert _invoke("validate", str(real / "m.onnx")).exit_code == 0


# ---- tampered metadata ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["../../../../../../../../../../{target}", "{target}", "files\\\\..\\\\x.onnx"]
)
def test_meta_naming_a_file_outside_the_version_is_never_read(tmp_path, store_root, bad):
    outside = save(linear(), tmp_path / "outside.onnx")  # what a tampered meta.json points at
    src = save(_two_in(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    meta_path = store_root / "models" / "m" / "1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    rel = bad.format(target=str(outside).lstrip("/"))
    if bad == "{target}":
        rel = str(outside)  # an absolute path
    meta["model_file"] = meta["files"][0]["path"] = rel
    import hashlib

    meta["files"][0]["sha256"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    meta["files"][0]["size"] = outside.stat().st_size
    meta_path.write_text(json.dumps(meta))
    for args in (["inspect", "m"], ["models", "path", "m"], ["validate", "m"]):
        result = _invoke(*args, "--json")
        assert result.exit_code == 6, (args, result.stdout)  # the outside model was loaded
        assert (
            "not inside the version's files/ folder"
            in json.loads(result.stdout)["error"]["message"]
        )
    verify = _invoke("models", "verify", "m", "--json")
    assert verify.exit_code == 9
    assert _invoke("models", "rm", "m:1", "--yes").exit_code == 0  # the damaged version goes
    assert not (store_root / "models" / "m" / "1").exists()
    assert outside.exists()


def test_a_version_with_unreadable_metadata_can_still_be_removed(tmp_path, store_root):
    for i, model in enumerate([linear(), _two_in()]):
        src = save(model, tmp_path / f"m{i}.onnx")
        assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    (store_root / "models" / "m" / "1" / "meta.json").write_text("{not json")
    assert _invoke("models", "show", "m:1").exit_code == 6
    result = _invoke("models", "rm", "m:1", "--yes")
    assert result.exit_code == 0, result.stderr  # the hint said to do this; it failed with 6
    assert _invoke("models", "verify", "--json").exit_code == 0
    assert _invoke("models", "show", "m:2").exit_code == 0


def test_convert_model_whose_inputs_cannot_be_synthesized_names_what_to_do(tmp_path):
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])], "g", [seq],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    src = save(model, tmp_path / "seq.onnx")
    result = _invoke("convert", str(src), "--opset", "18", "-o", str(tmp_path / "s18.onnx"))
    assert result.exit_code == 5, result.stderr
    line = result.stderr.strip()
    assert "cannot check parity, so nothing was converted" in line and "input 's'" in line
    assert "pass real input data" not in line and "validate NEW.onnx --inputs" in line
    assert not (tmp_path / "s18.onnx").exists()


def test_diff_without_rows_never_reads_plain_equal_and_warns_about_external_weights(tmp_path):
    folders = []
    for k in (1.0, 2.0):
        folder = tmp_path / f"w{int(k)}"
        folder.mkdir()
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
            [numpy_helper.from_array(np.full((4, 2), k, np.float32), "W")],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.save(model, folder / "m.onnx", save_as_external_data=True, location="w.bin",
                  size_threshold=0)  # fmt: skip
        folders.append(folder / "m.onnx")
    result = _invoke("models", "diff", str(folders[0]), str(folders[1]))
    assert result.exit_code == 0  # documented: structure alone never differs
    # the verdict read a bare "EQUAL" when the structure was unchanged
    assert result.stdout.strip().splitlines()[-1] == "EQUAL (outputs not compared)"
    assert "1 initializer(s) in external data were not compared" in result.stderr


def test_a_folder_given_as_the_model_names_the_model_inside(tmp_path):
    folder = tmp_path / "export.onnx"  # some exporters write a folder of this name
    folder.mkdir()
    save(linear(), folder / "model.onnx")
    for args in (["inspect", str(folder)], ["validate", str(folder)]):
        result = _invoke(*args)
        assert result.exit_code in (4, 9)
        assert f"the folder holds one model: pass '{folder / 'model.onnx'}'" in result.stderr
    save(linear(), folder / "other.onnx")
    result = _invoke("models", "add", str(folder), "--name", "m")
    assert result.exit_code == 4 and "holds 2 models (model.onnx, other.onnx)" in result.stderr


@pytest.mark.parametrize("dirname", ["007", "٧"])
def test_a_version_folder_spelled_another_way_is_ignored_not_a_crash(tmp_path, store_root, dirname):
    import shutil

    src = save(linear(), tmp_path / "m.onnx")
    assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    shutil.copytree(store_root / "models" / "m" / "1", store_root / "models" / "m" / dirname)
    for args in (["models", "list"], ["models", "show", "m"], ["models", "verify"]):
        result = _invoke(*args)
        assert result.exit_code == 0, (args, result.stderr)  # '007' was an internal error
    assert json.loads(_invoke("models", "show", "m", "--json").stdout)["result"]["version"] == 1


def test_an_incomplete_version_folder_is_reported_and_removable(tmp_path, store_root):
    for i, model in enumerate([linear(), _two_in()]):
        src = save(model, tmp_path / f"m{i}.onnx")
        assert _invoke("models", "add", str(src), "--name", "m").exit_code == 0
    meta = store_root / "models" / "m" / "2" / "meta.json"
    meta.unlink()
    meta.mkdir()  # not a file: verify said "ok"
    verify = _invoke("models", "verify", "--json")
    assert verify.exit_code == 9 and "m:2" in verify.stdout
    result = _invoke("models", "rm", "m:2", "--yes")
    assert result.exit_code == 0, result.stderr  # verify's hint says to; it was "no version 2"
    assert _invoke("models", "verify").exit_code == 0
    assert _invoke("models", "show", "m:1").exit_code == 0
