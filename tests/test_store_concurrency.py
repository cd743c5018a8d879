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
    trials = 20
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
    assert set(outcomes) <= {0, -signal.SIGKILL}
    # the next writer cleans up whatever the killed ones left in tmp/
    subprocess.run(
        _add_cmd(path, "after"), env=_env(store_root), check=True, capture_output=True, timeout=120
    )
    assert not list(Store().tmp_dir.iterdir())
    assert verify().ok


def _limit_file_size(limit):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.timeout(120)
def test_disk_full_during_add_leaves_no_partial_version(tmp_path, store_root):
    Store(store_root).init()
    big = builders.save(builders.linear(n_features=400, n_out=8), tmp_path / "big.onnx")
    assert big.stat().st_size > 8000
    proc = subprocess.run(
        _add_cmd(big, "full"),
        env=_env(store_root),
        capture_output=True,
        text=True,
        timeout=100,
        preexec_fn=_limit_file_size(4096),
    )
    assert proc.returncode == 6, proc.stderr
    assert "cannot write to the store" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert Store().versions("full") == []
    assert verify().ok
    # the next unrestricted writer cleans up and succeeds
    subprocess.run(
        _add_cmd(big, "full"), env=_env(store_root), check=True, capture_output=True, timeout=100
    )
    assert Store().versions("full") == [1]
    assert not list(Store().tmp_dir.iterdir())


@pytest.mark.timeout(180)
def test_concurrent_rm_and_add_keep_the_store_consistent(tmp_path, store_root):
    env = _env(store_root)
    seeds = [
        builders.save(builders.linear(seed=100 + i), tmp_path / f"s{i}.onnx") for i in range(4)
    ]
    for p in seeds:
        subprocess.run(_add_cmd(p, "churn"), env=env, check=True, capture_output=True, timeout=100)
    new = [builders.save(builders.linear(seed=200 + i), tmp_path / f"n{i}.onnx") for i in range(4)]
    procs = [
        subprocess.Popen(
            _add_cmd(p, "churn"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for p in new
    ]
    procs += [
        subprocess.Popen(
            [sys.executable, "-m", "modelforge", "--quiet", "models", "rm", f"churn:{v}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for v in (1, 2, 3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, err.decode()
    versions = Store().versions("churn")
    assert versions == [4, 5, 6, 7, 8]
    assert verify().ok
