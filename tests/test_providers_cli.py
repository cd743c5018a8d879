"""modelforge providers: short names of this onnxruntime build's providers."""

from __future__ import annotations

import json

import onnxruntime as ort
from typer.testing import CliRunner

from modelforge.cli.app import app

runner = CliRunner()


def test_providers_json_lists_cpu():
    result = runner.invoke(app, ["providers", "--json"])
    assert result.exit_code == 0
    env = json.loads(result.stdout)
    providers = env["result"]["providers"]
    assert {"short": "cpu", "name": "CPUExecutionProvider"} in providers
    assert [p["name"] for p in providers] == ort.get_available_providers()
    assert env["result"]["onnxruntime_version"] == ort.__version__


def test_providers_human():
    result = runner.invoke(app, ["providers"])
    assert result.exit_code == 0
    assert "CPUExecutionProvider" in result.stdout and "cpu" in result.stdout
    assert result.stderr == ""
