"""Crash and concurrency safety of `models add`, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from modelforge.store.catalog import find
from modelforge.store.layout import Store
from modelforge.store.ops import verify
from tests import builders


def _add_cmd(path, name):
    return [
        sys.executable,
        "-m",
        "modelforge",
        "--quiet",
        "models",
        "add",
        str(path),
        "--name",
        name,
    ]


def _env(store_root):
    return {**os.environ, "MODELFORGE_HOME": str(store_root)}


@pytest.mark.timeout(180)
def test_eight_concurrent_adds_get_eight_complete_versions(tmp_path, store_root):
    paths = [builders.save(builders.linear(seed=i), tmp_path / f"m{i}.onnx") for i in range(8)]
    procs = [
        subprocess.Popen(
            _add_cmd(p, "race"),
            env=_env(store_root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in paths
    ]
    for p in procs:
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, err.decode()
    st = Store()
    assert st.versions("race") == list(range(1, 9))
    hashes = {find(st, f"race:{v}").sha256 for v in range(1, 9)}
    assert len(hashes) == 8
    result = verify()
    assert result.ok, result.problems
    assert not list(st.tmp_dir.iterdir())


@pytest.mark.timeout(240)
def test_sigkill_during_add_leaves_no_or_complete_version(tmp_path, store_root):
    path = builders.with_external_data(tmp_path / "ext")
    # Measure one add to spread the kill points across its whole duration.
    t0 = time.monotonic()
    subprocess.run(
        _add_cmd(path, "probe"), env=_env(store_root), check=True, capture_output=True, timeout=120
    )
    duration = time.monotonic() - t0
    trials = 8
    outcomes = []
    for i in range(trials):
        variant = builders.with_external_data(tmp_path / f"v{i}")
        # make each file distinct so that every completed add is a new version
        (variant.parent / "weights.bin").write_bytes(
            bytes([i + 1]) + (variant.parent / "weights.bin").read_bytes()[1:]
        )
        proc = subprocess.Popen(
            _add_cmd(variant, "killed"),
            env=_env(store_root),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(duration * (i + 0.5) / trials)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        outcomes.append(proc.returncode)
        result = verify()
        assert result.ok, (i, result.problems)
        for v in Store().versions("killed"):
            mv = find(Store(), f"killed:{v}")
            assert {f["path"] for f in mv.meta["files"]} == {"model.onnx", "weights.bin"}
    # the next writer cleans up whatever the killed ones left in tmp/
    subprocess.run(
        _add_cmd(path, "after"), env=_env(store_root), check=True, capture_output=True, timeout=120
    )
    assert not list(Store().tmp_dir.iterdir())
    assert verify().ok
