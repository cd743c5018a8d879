"""The root CLI: lazy command table, help, docs drift, error plumbing."""

from __future__ import annotations

import io
import os
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


# ---- the CLI edge: error mapping, Ctrl-C, global options, suggestions, completion -----------

_BIN = Path(sys.executable).parent / "modelforge"


def _boom(*_args, **_kwargs):
    raise KeyError("boom")


def test_bug_is_internal_error_exit_1_with_traceback_only_under_debug(monkeypatch):
    import json

    monkeypatch.setattr("modelforge.cli.providers.list_providers", _boom)
    plain = runner.invoke(app, ["providers"])
    assert plain.exit_code == 1
    assert plain.stderr.strip().splitlines() == [
        "error: internal error: KeyError: 'boom' Hint: this is a bug in ModelForge; rerun with "
        "--debug for the traceback and report it"
    ]
    debug = runner.invoke(app, ["providers", "--debug"])
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "_boom" in debug.stderr
    env = json.loads(runner.invoke(app, ["providers", "--json"]).stdout)
    assert env["status"] == "error" and env["error"]["code"] == "internal_error"
    assert env["error"]["exit_code"] == 1


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_is_exit_130_with_an_envelope_in_json_mode(monkeypatch):
    import json

    monkeypatch.setattr("modelforge.cli.providers.list_providers", _interrupt)
    res = runner.invoke(app, ["providers", "--json"])
    assert res.exit_code == 130
    env = json.loads(res.stdout)
    assert env["status"] == "error" and env["error"]["code"] == "interrupted"
    assert env["error"]["exit_code"] == 130
    assert res.stderr.strip() == "error: interrupted (Ctrl-C)"
    assert "Traceback" not in res.stderr


@pytest.mark.timeout(120)
def test_ctrl_c_during_a_real_guarded_run_writes_the_envelope(tmp_path):
    """SIGINT to the whole process group (what a terminal sends) while bench runs in its
    guarded child: exit 130, one envelope, no traceback, no 'Exception ignored'."""
    import json
    import os
    import signal
    import time

    from tests.builders import linear, save

    model = save(linear(), tmp_path / "m.onnx")
    proc = subprocess.Popen(
        [str(_BIN), "bench", str(model), "--duration", "100", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        while time.monotonic() < deadline and not (
            children.exists() and children.read_text().split()
        ):
            time.sleep(0.1)  # wait until the guarded child runs
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    env = json.loads(out)
    assert env["error"]["code"] == "interrupted"
    assert "Traceback" not in err and "Exception ignored" not in err


def test_unraisable_keyboard_interrupt_is_quiet_unless_debug():
    code = (
        "import gc, sys\n"
        "from modelforge.cli.common import install_unraisable_hook\n"
        "install_unraisable_hook(debug=sys.argv[1] == '1')\n"
        "def rows():\n"
        "    try:\n"
        "        yield 1\n"
        "    finally:\n"
        "        raise KeyboardInterrupt\n"
        "g = rows(); next(g); del g; gc.collect()\n"
        "print('done')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True)
    assert quiet.stdout == "done\n" and quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True)
    assert "Exception ignored" in loud.stderr and "KeyboardInterrupt" in loud.stderr


_CHILD_BUG = """
import sys
from modelforge.cli.app import main
from modelforge.model import convert as convert_mod
from modelforge.model.checks import runner as check_runner

def boom(*args, **kwargs):
    raise KeyError("boom")

convert_mod.convert_opset = boom    # reaches the forked child
check_runner.CHECKS["structure"] = boom
sys.argv = ["modelforge", *sys.argv[1:]]
main()
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("command", ["validate", "convert"])
def test_a_bug_in_a_child_shows_its_traceback_only_with_debug(command, tmp_path):
    from tests.builders import linear, save

    model = save(linear(opset=13), tmp_path / "m.onnx")
    args = [command, str(model)]
    if command == "convert":
        args += ["--opset", "17", "-o", str(tmp_path / "out.onnx")]
    plain = subprocess.run([sys.executable, "-c", _CHILD_BUG, *args], capture_output=True,
                           text=True, timeout=150)  # fmt: skip
    assert plain.returncode == 1, plain.stderr
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), plain.stderr
    assert "KeyError: 'boom'" in lines[0] and "Traceback" not in plain.stderr
    assert "hostile" not in plain.stderr
    debug = subprocess.run([sys.executable, "-c", _CHILD_BUG, *args, "--debug"],
                           capture_output=True, text=True, timeout=150)  # fmt: skip
    assert debug.returncode == 1
    assert "traceback in the child process:" in debug.stderr and "in boom" in debug.stderr


def test_mistyped_top_level_command_suggests_close_matches():
    res = runner.invoke(app, ["predcit"])
    assert res.exit_code == 2 and "No such command 'predcit'. Did you mean 'predict'?" in res.stderr
    res = runner.invoke(app, ["model", "list"])
    assert res.exit_code == 2 and "Did you mean 'models'?" in res.stderr
    res = runner.invoke(app, ["zzzz"])
    assert res.exit_code == 2 and "Did you mean" not in res.stderr


def test_global_options_work_after_the_command_too(tmp_path):
    from tests.builders import linear, save

    model = save(linear(), tmp_path / "m.onnx")
    store = tmp_path / "elsewhere"
    res = runner.invoke(app, ["models", "add", str(model), "--name", "lin", "--store", str(store),
                              "-q"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert (store / "models" / "lin").is_dir()
    assert "lin" not in runner.invoke(app, ["models", "list"]).stdout  # the default store
    assert "lin" in runner.invoke(app, ["models", "list", "--store", str(store)]).stdout
    res = runner.invoke(app, ["inspect", str(tmp_path / "missing.onnx"), "--debug"])
    assert res.exit_code == 3 and "No such option" not in res.stderr
    assert "Traceback" in res.stderr  # --debug took effect


def test_hoisting_leaves_the_commands_own_values_and_everything_after_dashdash():
    from modelforge.cli.app import hoist_global_options

    predict = load_command("predict")
    moved, kept = hoist_global_options(["m.onnx", "-o", "-v", "d.csv", "--debug", "-vv"], predict)
    assert moved == ["--debug", "-vv"] and kept == ["m.onnx", "-o", "-v", "d.csv"]
    moved, kept = hoist_global_options(["m", "--store=/s", "--", "--debug"], predict)
    assert moved == ["--store=/s"] and kept == ["m", "--", "--debug"]


def test_completion_options_only_at_the_top_level():
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout
    for args in (["validate", "--help"], ["models", "--help"], ["models", "list", "--help"]):
        text = runner.invoke(app, args).stdout
        assert "--install-completion" not in text and "--show-completion" not in text, args


def _complete(words: str, home: Path, shell: str = "bash") -> list[str]:
    import os

    env = {**os.environ, "MODELFORGE_HOME": str(home), "_MODELFORGE_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env.update(
            COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1))
        )
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
    out = subprocess.run([str(_BIN)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.timeout(120)
def test_shell_completion_of_model_names_versions_and_aliases(tmp_path, store_root):
    from modelforge.store.add import add_model
    from modelforge.store.ops import tag
    from tests.builders import linear, save

    model = save(linear(), tmp_path / "m.onnx")
    add_model(model, "iris")
    add_model(save(linear(seed=1), tmp_path / "m2.onnx"), "iris")
    add_model(model, "churn")
    tag("iris:1", "prod")
    assert _complete("modelforge validate ir", store_root) == ["iris"]
    assert _complete("modelforge predict ", store_root)[:2] == ["churn", "iris"]
    assert _complete("modelforge inspect iris:", store_root) == [
        "iris:1",
        "iris:2",
        "iris:latest",
        "iris:prod",
    ]
    assert _complete("modelforge bench iris:p", store_root) == ["iris:prod"]
    zsh = " ".join(_complete("modelforge validate ch", store_root, shell="zsh"))
    assert "churn" in zsh


# ---- the renderer: progress display and binary output ----------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_bar_percentage_rate_and_is_always_erased():
    from modelforge.render import Renderer

    err = _Tty()
    r = Renderer("predict", stderr=err)
    with pytest.raises(KeyboardInterrupt), r.progress("predicting", total=200) as bar:
        bar.advance(50)
        bar.update(completed=100)
        r.warning("column 'z' is unused")  # printed above the bar, not into it
        raise KeyboardInterrupt
    text = err.getvalue()
    assert "predicting" in text and "50%" in text and "100/200 rows" in text and "rows/s" in text
    assert "warning: column 'z' is unused" in text
    assert "\x1b[?25h" in text and text.endswith("\x1b[2K")  # cursor back, last line erased


def test_progress_spinner_without_total_and_nothing_when_not_wanted():
    from modelforge.render import Renderer

    err = _Tty()
    with Renderer("validate", stderr=err).progress("validating", unit="checks") as bar:
        bar.update(description="checking shapes")
        bar.advance()
    assert "checking shapes" in err.getvalue() and "1 checks" in err.getvalue()
    assert "%" not in err.getvalue()
    for kwargs, stream in (({"quiet": True}, _Tty()), ({"json_mode": True}, _Tty()),
                           ({}, io.StringIO())):  # fmt: skip
        with Renderer("x", stderr=stream, **kwargs).progress("x", total=3) as bar:
            bar.advance()
            bar.update(completed=2, total=4, description="y")
        assert stream.getvalue() == ""


def test_binary_output_to_a_terminal_is_refused_like_gzip():
    from modelforge.errors import OutputError
    from modelforge.render import refuse_binary_to_terminal

    for fmt in ("npy", "npz", "parquet", "NPZ"):
        with pytest.raises(OutputError) as info:
            refuse_binary_to_terminal(fmt, _Tty())
        assert info.value.code == "binary_to_terminal" and info.value.exit_code == 10
        assert "-o FILE" in str(info.value)
        refuse_binary_to_terminal(fmt, io.StringIO())  # a pipe or file is fine
    for fmt in ("csv", "jsonl", None):
        refuse_binary_to_terminal(fmt, _Tty())


@pytest.mark.timeout(120)
def test_predict_refuses_binary_output_to_a_real_terminal(tmp_path):
    import os
    import pty

    from tests.builders import linear, save

    model = save(linear(), tmp_path / "m.onnx")
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,d\n1,2,3,4\n")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [str(_BIN), "predict", str(model), str(data), "--columns", "a,b,c,d",
             "--output-format", "npz"],
            stdout=slave, stderr=subprocess.PIPE, text=True, timeout=100,
        )  # fmt: skip
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 10
    assert proc.stderr.startswith("error: refusing to write binary npz output to a terminal")


def test_verbose_summary_counts_onnxruntime_runs(tmp_path):
    """A model with a fixed batch of 1 runs once per row: -v says so (it said '37 rows in 1
    batches')."""
    from tests.builders import linear, save

    model = save(linear(batch=1), tmp_path / "fixed.onnx")
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,d\n" + "".join(f"{i},1,2,3\n" for i in range(37)))
    res = runner.invoke(app, ["predict", str(model), str(data), "--columns", "a,b,c,d",
                              "-o", str(tmp_path / "o.csv"), "-v"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "37 rows in 37 onnxruntime runs (" in res.stderr and "batches" not in res.stderr


@pytest.mark.parametrize("json_mode", [False, True])
def test_closed_stdout_is_an_output_error_for_reporting_commands(tmp_path, json_mode):
    """`modelforge inspect m >&-`: exit 10 and one line on stderr, no internal error, also
    when the JSON error envelope itself cannot be written."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, tmp_path / "m.onnx")
    flags = ["--json"] if json_mode else []
    proc = subprocess.run(
        [sys.executable, "-m", "modelforge", "inspect", str(tmp_path / "m.onnx"), *flags],
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        env={**os.environ, "MODELFORGE_HOME": str(tmp_path / "store")},
        preexec_fn=lambda: os.close(1),  # the child starts with stdout closed, as with >&-
    )
    assert proc.returncode == 10, proc.stderr
    assert proc.stderr.count("\n") == 1 and "stdout is closed" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
