"""Model paths that are not plain files: FIFOs, directories, devices, symlinks.

Run as real subprocesses: a FIFO or /dev/zero opened for reading would block or read
forever, so a bounded finish proves it was only stat-ed.
"""

from __future__ import annotations

import json
import os

import pytest

from tests import builders
from tests.hostile.harness import assert_ok, assert_refused, cli, mf, store_entries

pytestmark = pytest.mark.timeout(90)


def _setup(case, folder, tmp_path):
    target = folder / "model.onnx"
    if case == "fifo":
        os.mkfifo(target)
    elif case == "directory":
        target.mkdir()
    elif case == "symlink_to_dev_zero":
        os.symlink("/dev/zero", target)
    elif case == "symlink_to_fifo_outside":
        os.mkfifo(tmp_path / "outside.fifo")
        os.symlink(tmp_path / "outside.fifo", target)
    elif case == "dangling_symlink":
        os.symlink(tmp_path / "gone.onnx", target)
    elif case == "symlink_loop":
        os.symlink(folder / "b.onnx", target)
        os.symlink(target, folder / "b.onnx")
    elif case == "missing":
        pass
    else:
        raise AssertionError(case)
    return target


# case -> (exit of validate, exit of inspect / models add, words on the stderr line)
CASES = {
    "fifo": (9, 4, "fifo"),
    "directory": (9, 4, "directory"),
    "symlink_to_dev_zero": (9, 4, "device"),
    "symlink_to_fifo_outside": (9, 4, "fifo"),
    "dangling_symlink": (3, 3, "dangling symlink"),
    "symlink_loop": ((3, 9), (3, 4), "model.onnx"),
    "missing": (3, 3, "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_path_that_is_not_a_file(case, folder, tmp_path, store_root):
    path = _setup(case, folder, tmp_path)
    v_rc, rc, needle = CASES[case]
    assert_refused(mf("validate", path, timeout=30), v_rc, needle, bound=20)
    assert_refused(mf("inspect", path, timeout=30), rc, needle, bound=20)
    assert_refused(mf("models", "add", path, "-n", "p", timeout=30), rc, needle, bound=20)
    assert store_entries(store_root) == set()


def test_symlink_to_a_model_outside_is_followed_and_recorded(folder, tmp_path, store_root):
    """A symlink the USER names is followed (it is their choice), and the store says so."""
    real = builders.save(builders.linear(), tmp_path / "elsewhere" / "real.onnx")
    os.symlink(real, folder / "link.onnx")
    assert_ok(cli("validate", folder / "link.onnx"))
    added = cli("models", "add", folder / "link.onnx", "-n", "linked", "--json")
    assert_ok(added)
    result = json.loads(added.stdout)["result"]
    assert result["symlink_resolved_to"] == str(real)
    stored = [p for p in store_entries(store_root) if p.endswith(".onnx")]
    assert stored and not any((store_root / p).is_symlink() for p in stored)


def test_symlinked_model_external_data_is_found_the_same_way_everywhere(folder, tmp_path):
    """Weights next to the symlink, not next to its target: all commands agree on the folder.

    validate, inspect, predict and onnxruntime look next to the path as given; models add
    used to look next to the symlink's target and refused what validate accepted.
    """
    real = builders.with_external_data(tmp_path / "elsewhere")
    os.symlink(real, folder / "model.onnx")
    os.rename(real.parent / "weights.bin", folder / "weights.bin")
    assert_ok(cli("validate", folder / "model.onnx"))
    assert_ok(cli("models", "add", folder / "model.onnx", "-n", "x"))
    assert_ok(cli("models", "verify"))
