"""`modelforge models ...` through the CLI: exit codes, stdout and stderr separately."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from modelforge.cli.app import app
from tests import builders

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, list(args), input=input)


@pytest.fixture
def model_file(tmp_path):
    return builders.save(builders.linear(), tmp_path / "linear.onnx")


def envelope(result):
    data = json.loads(result.stdout)
    assert data["modelforge"] == 1
    return data


def test_add_list_show_path(model_file):
    r = invoke(
        "models",
        "add",
        str(model_file),
        "--name",
        "lin",
        "--alias",
        "prod",
        "--label",
        "team=ml",
        "--columns",
        "a,b,c,d",
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("added lin:1 (aliases: prod)")
    r = invoke("models", "list")
    assert r.exit_code == 0 and "lin" in r.stdout and "prod" in r.stdout
    r = invoke("models", "list", "--json")
    data = envelope(r)
    assert data["status"] == "ok" and data["command"] == "models list"
    assert data["result"]["models"][0]["ref"] == "lin:1"
    r = invoke("models", "show", "lin:prod", "--json")
    meta = envelope(r)["result"]["metadata"]
    assert meta["labels"] == {"team": "ml"} and meta["columns"] == ["a", "b", "c", "d"]
    r = invoke("models", "show", "lin")
    assert r.exit_code == 0 and "tensor(float)" in r.stdout and "[N, 4]" in r.stdout
    r = invoke("models", "path", "lin")
    assert r.exit_code == 0
    assert r.stdout.strip().endswith("linear.onnx") and r.stderr == ""


def test_errors_are_one_line_with_exit_codes(model_file):
    r = invoke("models", "add", str(model_file), "--name", "../evil")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "invalid model name" in r.stderr
    assert "Traceback" not in r.stderr
    r = invoke("models", "show", "nothing")
    assert r.exit_code == 3 and "no model named 'nothing'" in r.stderr
    r = invoke("models", "show", "nothing", "--json")
    data = envelope(r)
    assert data["status"] == "error" and data["error"]["code"] == "model_not_found"
    assert data["error"]["exit_code"] == 3


def test_invalid_model_exit_code_and_no_entry(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"PK\x03\x04 not really a torch file")
    r = invoke("models", "add", str(bad), "--name", "bad")
    assert r.exit_code == 4
    assert "zip archive" in r.stderr and "torch.onnx.export" in r.stderr
    assert invoke("models", "list", "--json").exit_code == 0
    assert envelope(invoke("models", "list", "--json"))["result"]["models"] == []


def test_rm_all_requires_confirmation(model_file):
    invoke("models", "add", str(model_file), "--name", "lin")
    r = invoke("models", "rm", "lin", "--all")
    assert r.exit_code == 2 and "--yes" in r.stderr
    r = invoke("models", "rm", "lin", "--all", "--yes", "--json")
    assert envelope(r)["result"]["removed"] == ["lin:1"]


def test_tag_untag_verify_cli(model_file):
    invoke("models", "add", str(model_file), "--name", "lin")
    r = invoke("models", "tag", "lin:1", "prod")
    assert r.exit_code == 0 and r.stdout.strip() == "lin:prod -> 1"
    r = invoke("models", "verify")
    assert r.exit_code == 0 and "ok" in r.stdout
    path = invoke("models", "path", "lin").stdout.strip()
    import os

    os.chmod(path, 0o644)
    with open(path, "ab") as fh:
        fh.write(b"garbage")
    r = invoke("models", "verify", "--json")
    assert r.exit_code == 9
    data = envelope(r)
    assert data["status"] == "error" and data["error"]["code"] == "verify_failed"
    assert data["result"]["problems"]
    r = invoke("models", "untag", "lin", "prod")
    assert r.exit_code == 0


def test_export_import_cli(model_file, tmp_path):
    invoke("models", "add", str(model_file), "--name", "lin")
    archive = tmp_path / "lin.tar.gz"
    r = invoke("models", "export", "lin", "-o", str(archive))
    assert r.exit_code == 0 and archive.exists()
    r = invoke("models", "import", str(archive), "--name", "lin2", "--json")
    assert envelope(r)["result"]["ref"] == "lin2:1"


def test_control_characters_from_files_are_escaped(tmp_path):
    model = builders.linear()
    model.doc_string = "evil\x1b[31mred\nnewline"
    model.metadata_props.add(key="note\x1b]0;title\x07", value="x\ny")
    path = builders.save(model, tmp_path / "evil.onnx")
    invoke("models", "add", str(path), "--name", "evil")
    r = invoke("models", "show", "evil")
    assert r.exit_code == 0
    assert "\x1b" not in r.stdout and "\\x1b" in r.stdout


def test_version_flag():
    r = invoke("--version")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ModelForge ") and lines[1].startswith("onnx ")
    assert lines[2].startswith("onnxruntime ")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [["--help"], ["models", "list"], ["models", "--help"]])
def test_light_commands_do_not_import_heavy_modules(argv, tmp_path):
    code = (
        "import sys\n"
        "from modelforge.cli.app import app\n"
        "try:\n"
        f"    app({argv!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'pandas', 'polars', 'pyarrow', 'numpy')\n"
        "         if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=50,
        env={**__import__("os").environ, "MODELFORGE_HOME": str(tmp_path)},
    )
    assert "HEAVY=" in proc.stderr
    assert proc.stderr.split("HEAVY=")[1].strip() == ""


@pytest.mark.timeout(60)
def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "modelforge", "models", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=50,
        env={**__import__("os").environ, "MODELFORGE_HOME": str(tmp_path)},
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["result"]["models"] == []


def test_store_option_overrides_env(model_file, tmp_path):
    other = tmp_path / "other-store"
    r = invoke("--store", str(other), "models", "add", str(model_file), "--name", "lin")
    assert r.exit_code == 0
    assert (other / "models" / "lin" / "1" / "meta.json").is_file()
    assert envelope(invoke("models", "list", "--json"))["result"]["models"] == []
