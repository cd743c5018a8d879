"""The root CLI: lazy command table, help, docs drift, error plumbing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelforge.cli.app import COMMANDS, app, load_command
from modelforge.errors import EXIT_CODE_TABLE

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_table_matches_each_commands_docstring(name):
    cmd = load_command(name)
    summary = (cmd.help or "").strip().split("\n\n")[0].replace("\n", " ")
    assert summary == COMMANDS[name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_an_example(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0
    text = result.stdout
    if name == "models":
        for sub in load_command("models").commands:
            sub_help = runner.invoke(app, ["models", sub, "--help"]).stdout
            assert "Example:" in sub_help, sub
    else:
        assert "Example:" in text


def test_root_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_unknown_command_is_a_usage_error():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2
    assert "frobnicate" in result.stderr


def test_readme_reference_is_generated_from_help():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_mentions_every_command_and_exit_code():
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"modelforge {name}" in readme
    for code, meaning in EXIT_CODE_TABLE:
        assert f"| {int(code)} |" in readme, meaning
