"""Hostile external-data references through validate, inspect and models add (+ --force).

The file each hostile reference points at lives OUTSIDE the model's folder and is a FIFO
with no writer: anything that opened it for reading would block, so "the command finished
within its bound" proves the outside file was never opened. Where the reference must lead to
a regular file (hard links), its content is a marker that must never show up in the store.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests import builders
from tests.hostile.harness import assert_ok, assert_refused, cli, mf, store_entries

pytestmark = pytest.mark.timeout(90)
MARKER = b"OUTSIDE-SECRET-" * 4


def _model_with(folder: Path, location: str, **fields: str) -> Path:
    """linear() with weights.bin next to it, then W's external_data rewritten."""
    path = builders.with_external_data(folder)
    model = onnx.load(path, load_external_data=False)
    w = model.graph.initializer[0]
    entries = {e.key: e.value for e in w.external_data}
    entries["location"] = location
    entries.update(fields)
    del w.external_data[:]
    for key, value in entries.items():
        w.external_data.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def _outside(tmp_path: Path) -> Path:
    """A folder beside the model's folder, holding FIFOs that nobody writes."""
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    for name in ("weights.bin", "secret.bin"):
        if not (out / name).exists():
            os.mkfifo(out / name)
    return out


def _setup(case: str, folder: Path, tmp_path: Path) -> Path:
    out = _outside(tmp_path)
    if case == "dotdot":
        return _model_with(folder, "../outside/secret.bin")
    if case == "nested_dotdot":
        (folder / "sub").mkdir()
        return _model_with(folder, "sub/../../outside/secret.bin")
    if case == "absolute":
        return _model_with(folder, str(out / "secret.bin"))
    if case in ("proc_environ", "dev_zero"):
        return _model_with(folder, "/proc/self/environ" if case == "proc_environ" else "/dev/zero")
    if case == "backslash":
        return _model_with(folder, "..\\outside\\secret.bin")
    if case == "symlinked_file":
        os.symlink(out / "secret.bin", folder / "link.bin")
        return _model_with(folder, "link.bin")
    if case == "symlinked_folder":
        os.symlink(out, folder / "linkdir")
        return _model_with(folder, "linkdir/secret.bin")
    if case == "hard_link":
        (out / "regular.bin").write_bytes(MARKER)
        os.link(out / "regular.bin", folder / "hard.bin")
        return _model_with(folder, "hard.bin", offset="0", length="16")
    if case == "missing":
        return _model_with(folder, "nowhere.bin")
    if case == "offset_beyond_eof":
        return _model_with(folder, "weights.bin", offset="4096")
    if case == "length_beyond_eof":
        return _model_with(folder, "weights.bin", offset="0", length="4096")
    if case == "length_mismatch":
        return _model_with(folder, "weights.bin", offset="0", length="8")
    if case == "fifo_data_file":
        os.mkfifo(folder / "pipe.bin")
        return _model_with(folder, "pipe.bin")
    if case == "directory_data_file":
        (folder / "dir.bin").mkdir()
        return _model_with(folder, "dir.bin")
    if case == "unknown_key":
        return _model_with(folder, "weights.bin", evil="1")
    if case == "basepath_outside":
        # a 'basepath' key is allowed by the format; it must never redirect the read
        return _model_with(folder, "secret.bin", basepath=str(out))
    raise AssertionError(case)


# case -> words the one stderr line must contain
CASES = {
    "dotdot": "'..'",
    "nested_dotdot": "'..'",
    "absolute": "absolute path",
    "proc_environ": "absolute path",
    "dev_zero": "absolute path",
    "backslash": "backslash",
    "symlinked_file": "outside the model's folder",
    "symlinked_folder": "outside the model's folder",
    "hard_link": "hard link",
    "missing": "does not exist",
    "offset_beyond_eof": "beyond the end",
    "length_beyond_eof": "past the end",
    "length_mismatch": "tensor needs",
    "fifo_data_file": "not a regular file",
    "directory_data_file": "not a regular file",
    "unknown_key": "unknown key",
    "basepath_outside": "does not exist",
}


@pytest.fixture(autouse=True)
def _short_sandbox_timeout(monkeypatch):
    # a child that blocked on a FIFO would show up as a timeout (exit 8), not a hang
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "20")


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_external_data(case, folder, tmp_path, store_root):
    path = _setup(case, folder, tmp_path)
    needle = CASES[case]
    before = store_entries(store_root)

    v = cli("validate", path)
    line = assert_refused(v, 9, "external_data:", needle)
    assert "W" in line  # names the tensor

    i = cli("inspect", path)  # inspect reports, it does not refuse: the model itself parses
    assert_ok(i)
    assert needle.lower() in i.stdout.lower(), str(i)

    for extra in ((), ("--force",)):  # --force never overrides an unsafe reference
        a = cli("models", "add", path, "--name", "ext", *extra)
        assert_refused(a, 4, needle)
        assert store_entries(store_root) == before
    _assert_marker_not_in(store_root)


def _assert_marker_not_in(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert MARKER not in p.read_bytes(), f"outside data copied into the store: {p}"


def test_outside_fifo_never_opened_by_a_real_process(folder, tmp_path, store_root):
    """The same refusals in real subprocesses with the default sandbox settings."""
    for case in ("dotdot", "symlinked_file", "symlinked_folder", "basepath_outside"):
        sub = folder / case
        sub.mkdir()
        path = _setup(case, sub, tmp_path)
        for args in (("validate", path), ("models", "add", path, "-n", "ext")):
            out = mf(*args, timeout=30, env={"MODELFORGE_TIMEOUT": "120"})
            assert_refused(out, (4, 9), CASES[case], bound=25)
    assert store_entries(store_root) == set()


def test_valid_external_data_is_stored_with_its_file(folder, store_root):
    path = builders.with_external_data(folder)
    assert_ok(cli("validate", path))
    assert_ok(cli("models", "add", path, "--name", "ext"))
    stored = [p for p in store_entries(store_root) if p.endswith("weights.bin")]
    assert stored, store_entries(store_root)
    assert_ok(cli("models", "verify"))
