"""Running ModelForge on hostile input and checking that it answered cleanly.

Two ways to run a command:

* :func:`mf` — a REAL subprocess (``sys.executable -m modelforge ...``) with a wall-clock
  timeout, for cases where a hang, a crash or a blocking read would matter;
* :func:`cli` — typer's CliRunner in-process, for the many cheap cases.

Both return an :class:`Outcome`; :func:`assert_refused` and :func:`assert_ok` state what a
clean answer is: a bounded run time, the documented exit code, exactly one line on stderr
naming the problem, no traceback, and nothing on stdout that could be mistaken for data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from modelforge.cli.app import app

_runner = CliRunner()


@dataclass(frozen=True)
class Outcome:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return (
            f"modelforge {' '.join(self.args)} -> rc={self.rc} in {self.seconds:.2f}s\n"
            f"--- stdout ---\n{self.stdout[-2000:]}\n--- stderr ---\n{self.stderr[-2000:]}"
        )


def mf(
    *args: str | os.PathLike[str],
    timeout: float = 60,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Outcome:
    """``python -m modelforge ARGS`` in a subprocess; a hang fails the test after ``timeout``."""
    argv = tuple(os.fspath(a) for a in args)
    full_env = dict(os.environ)
    full_env.pop("MODELFORGE_DEBUG", None)
    if env:
        full_env.update(env)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "modelforge", *argv],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )
    return Outcome(
        argv,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
        time.monotonic() - started,
    )


def cli(*args: str | os.PathLike[str], stdin: bytes | None = None) -> Outcome:
    """The same command in-process through typer's CliRunner (stdout and stderr separate)."""
    argv = tuple(os.fspath(a) for a in args)
    started = time.monotonic()
    res = _runner.invoke(app, list(argv), input=stdin)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"modelforge {' '.join(argv)} raised {res.exception!r}")
    return Outcome(argv, res.exit_code, res.stdout, res.stderr, time.monotonic() - started)


def assert_clean(out: Outcome, *, bound: float = 30) -> None:
    """Finished in time, no traceback, no raw control characters on either stream."""
    assert out.seconds < bound, f"took {out.seconds:.1f}s (bound {bound}s)\n{out}"
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, str(out)
    assert out.rc != 1, f"exit 1 means an internal error (a bug)\n{out}"
    for stream in (out.stdout, out.stderr):
        bad = [c for c in stream if ord(c) < 32 and c not in "\n\t"]
        assert not bad, f"raw control characters {bad[:5]!r} reached the terminal\n{out}"


def assert_refused(
    out: Outcome,
    rc: int | tuple[int, ...],
    *needles: str,
    bound: float = 30,
) -> str:
    """Non-zero documented exit, exactly one stderr line naming the problem; returns it."""
    assert_clean(out, bound=bound)
    codes = rc if isinstance(rc, tuple) else (rc,)
    assert out.rc in codes, f"expected exit {codes}\n{out}"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr\n{out}"
    line = lines[0]
    assert line.startswith("error: "), str(out)
    for needle in needles:
        assert needle.lower() in line.lower(), f"stderr does not name {needle!r}\n{out}"
    return line


def assert_ok(out: Outcome, *, bound: float = 30) -> None:
    assert_clean(out, bound=bound)
    assert out.rc == 0, str(out)


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root`` (relative), to prove that nothing was added."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def store_entries(root: Path) -> set[str]:
    """Every file of the store that could hold a model, blob, alias or metadata.

    Left out: lock files, the staging folder, empty folders and ``store.json`` (the store's
    own header, written when the store is first used, even by a refused ``models add``).
    """
    if not root.exists():
        return set()
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir()
        and p.relative_to(root).parts[0] not in ("locks", "tmp")
        and p.name != "store.json"
    }
