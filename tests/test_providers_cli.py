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
    # options: what onnxruntime reports for --provider-option (CPU takes none)
    assert {"short": "cpu", "name": "CPUExecutionProvider", "options": {}} in providers
    assert [p["name"] for p in providers] == ort.get_available_providers()
    assert env["result"]["onnxruntime_version"] == ort.__version__


def test_providers_human():
    result = runner.invoke(app, ["providers"])
    assert result.exit_code == 0
    assert "CPUExecutionProvider" in result.stdout and "cpu" in result.stdout
    assert "--provider-option keys" in result.stdout and "none (use --threads" in result.stdout
    assert result.stderr == ""


def test_reported_options_of_a_provider_that_cannot_start_is_none():
    from modelforge.engine.providers import reported_options

    assert reported_options("CPUExecutionProvider") == {}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert reported_options("CUDAExecutionProvider") is None
