"""Partitioned predict on real Dask processes on 127.0.0.1 (``dask scheduler`` / ``dask
worker``, and ``--cluster local:2``): faults are real SIGKILLs of real processes.

Each fixture starts its processes in their own process group and kills that group in
``finally``; every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modelforge import predict_to
from modelforge.cluster import predict_partitioned
from modelforge.cluster.worker import host_cores
from modelforge.errors import DataError, ResourceLimitError, RuntimeFailure
from tests import cluster_builders as cb

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLOW = (2048, 2048)  # ~1 s per 10,000 rows on one thread: parts run long enough to kill


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
    }
    env.update(extra or {})
    return env


def _until(check, timeout: float, what: str, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # leftovers of the group (worker processes)
        p.wait(timeout=10)


@contextmanager
def dask_cluster(folder: Path, workers: int = 2, worker_path: str | None = None):
    """A scheduler and one ``dask worker`` process with ``workers`` nannies (1 thread each,
    1 GiB memory limit); yields the scheduler file."""
    from distributed import Client

    folder.mkdir(parents=True, exist_ok=True)
    sched = folder / "scheduler.json"
    procs: list[subprocess.Popen] = []
    log = open(folder / "dask.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        args = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                "--scheduler-file", str(sched)]  # fmt: skip
        procs.append(subprocess.Popen([str(BIN / "dask"), *args], env=_env(), stdout=log,
                                      stderr=log, start_new_session=True))  # fmt: skip
        _until(sched.exists, 30, "the scheduler file")
        if not workers:
            yield sched
            return
        wenv = _env({"PYTHONPATH": f"{worker_path}:{ROOT}"} if worker_path else None)
        args = ["worker", "--scheduler-file", str(sched), "--nworkers", str(workers),
                "--nthreads", "1", "--memory-limit", "1GiB", "--no-dashboard",
                "--host", "127.0.0.1", "--death-timeout", "30"]  # fmt: skip
        procs.append(subprocess.Popen([str(BIN / "dask"), *args], env=wenv, stdout=log,
                                      stderr=log, start_new_session=True))  # fmt: skip
        with Client(scheduler_file=str(sched), timeout=30) as c:
            c.wait_for_workers(workers, timeout=60)
        yield sched
    finally:
        _stop(procs)
        log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("dask")) as sched:
        yield str(sched)


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slow")
    model = str(cb.mlp(folder / "slow.onnx", hidden=SLOW))
    inputs = cb.parquet_inputs(folder, [20_000, 20_000], row_group=10_000)
    single = folder / "single.parquet"
    predict_to(model, inputs, str(single), columns=cb.FEATURES, keep=["id"], batch_size=1000)
    return model, inputs, pq.read_table(single)


KW = {"columns": cb.FEATURES, "keep": ["id"], "batch_size": 1000, "partition_rows": 10_000}


def _attempts(out: Path) -> list[tuple[int, int]]:
    """(part index, worker pid) of the attempt files being written."""
    found = []
    for name in os.listdir(out / "_temporary") if (out / "_temporary").exists() else []:
        if name.startswith("part-") and name.endswith(".parquet"):
            found.append((int(name[5:11]), int(name.split(".")[1].split("-")[0])))
    return found


def _in_thread(fn, **kw):
    box: dict = {}

    def target():
        try:
            box["result"] = fn(**kw)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_worker_killed_mid_part_reruns_elsewhere(cluster, slow_job, tmp_path):
    model, inputs, single = slow_job
    out = tmp_path / "out"
    t, box = _in_thread(predict_partitioned, model=model, inputs=inputs, out_dir=f"{out}/",
                        cluster=cluster, **KW)  # fmt: skip
    part, pid = _until(lambda: _attempts(out)[:1], 60, "a part to start")[0]
    os.kill(pid, signal.SIGKILL)
    t.join(120)
    assert not t.is_alive() and "error" not in box, box.get("error")
    s = box["result"]
    assert s.parts == 4 and s.attempts >= 5 and s.workers_lost >= 1
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert [p["file"] for p in manifest["parts"]] == [f"part-{i:06d}.parquet" for i in range(4)]
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [p["file"] for p in manifest["parts"]]
    assert cb.read_parts(out).equals(single)


def test_a_part_that_kills_its_workers_is_named(cluster, tmp_path):
    model = str(cb.memory_bomb(tmp_path / "bomb.onnx"))
    n_ok = lambda k, n: np.ones(n, dtype=np.int64)  # noqa: E731
    n_bomb = lambda k, n: np.full(n, 1 if k != 1 else 2_000_000_000, dtype=np.int64)  # noqa: E731
    inputs = cb.parquet_inputs(tmp_path, [100, 100, 100], row_group=100, extra={"n": n_bomb})
    assert n_ok  # the other files' n is 1: a 4-byte allocation
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(ResourceLimitError, match=r"part 1 \('.*in1.parquet'") as err:
        predict_partitioned(model, inputs, f"{out}/", cluster=cluster,
                            maps={"x": cb.FEATURES, "n": ["n"]})  # fmt: skip
    assert err.value.code == "part_killed_workers" and time.monotonic() - t0 < 90
    assert not (out / "_SUCCESS").exists()
    for i in (0, 2):  # the other parts are intact (committed whole, or not at all)
        p = out / f"part-{i:06d}.parquet"
        assert not p.exists() or pq.ParquetFile(p).metadata.num_rows == 100
    from distributed import Client

    with Client(scheduler_file=cluster, timeout=30) as c:  # the nannies restarted them
        c.wait_for_workers(2, timeout=60)


def test_a_model_that_kills_workers_on_blank_rows_stops_at_the_warm_up(cluster, tmp_path):
    """The warm-up is not handed on to worker after worker: KilledWorker there stops the
    job before any part, naming the warm-up (its rows hold no user data)."""
    model = str(cb.memory_bomb(tmp_path / "bomb.onnx", always=2_000_000_000))
    n_ok = lambda k, n: np.ones(n, dtype=np.int64)  # noqa: E731
    inputs = cb.parquet_inputs(tmp_path, [100, 100], row_group=100, extra={"n": n_ok})
    out = tmp_path / "out"
    with pytest.raises(ResourceLimitError, match="warm-up on blank rows") as err:
        predict_partitioned(model, inputs, f"{out}/", cluster=cluster,
                            maps={"x": cb.FEATURES, "n": ["n"]})  # fmt: skip
    assert err.value.code == "warmup_killed_workers"
    assert not list(out.glob("part-*")) and not (out / "_SUCCESS").exists()
    from distributed import Client

    with Client(scheduler_file=cluster, timeout=30) as c:  # the nannies restarted them
        c.wait_for_workers(2, timeout=60)


def test_bad_data_in_one_file_is_named_and_not_retried(cluster, tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    inputs = cb.parquet_inputs(tmp_path, [50, 50], row_group=50)
    table = pq.read_table(inputs[1]).to_pandas()
    table.loc[7, "f2"] = float("nan")
    table.to_parquet(inputs[1], index=False, row_group_size=50)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="in1.parquet") as err:
        predict_partitioned(model, inputs, f"{out}/", cluster=cluster, columns=cb.FEATURES)
    assert err.value.code == "nan_value" and not (out / "_SUCCESS").exists()


def _cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "modelforge"), *args], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


def test_client_killed_mid_run_then_resume_keeps_committed_parts(cluster, slow_job, tmp_path):
    from distributed import Client

    model, _, single = slow_job
    # the slow job's rows in 8 parts: two workers hold at most two parts each (the one they
    # run and the next), so a client killed at the first commit always leaves parts undone
    inputs = cb.parquet_inputs(tmp_path, [20_000, 20_000], row_group=5000)
    out = tmp_path / "out"
    args = ["predict", model, *inputs, "--columns", ",".join(cb.FEATURES), "--keep", "id",
            "--batch-size", "1000", "--partition-rows", "5000", "-o", f"{out}/",
            "--cluster", cluster]  # fmt: skip
    client = _cli(args, start_new_session=True)
    try:
        _until(lambda: list(out.glob("part-*.parquet")), 90, "a committed part")
        os.killpg(client.pid, signal.SIGKILL)
    finally:
        client.wait(30)
    with Client(scheduler_file=cluster, timeout=30) as c:
        # the scheduler drops the dead client's tasks; one already running on a worker goes
        # on (cancelled) and may still commit its part: wait until none is being written
        _until(lambda: not any(c.processing().values()) and not _attempts(out), 60, "idle", 0.2)
        time.sleep(0.5)
        _until(lambda: not _attempts(out), 60, "no attempt in flight", 0.2)
    assert not (out / "_SUCCESS").exists()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*")}
    assert 1 <= len(before) < 8
    res = _cli([*args, "--resume", "--json"])
    stdout, stderr = res.communicate(timeout=120)
    assert res.returncode == 0, stderr
    summary = json.loads(stdout)["result"]
    assert summary["parts_resumed"] == len(before) and summary["parts_run"] == 8 - len(before)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*")}
    assert all(after[n] == v for n, v in before.items())
    assert cb.read_parts(out).equals(single)


def test_local_cluster_through_the_cli_equals_single_process(slow_job, tmp_path):
    model, inputs, single = slow_job
    out = tmp_path / "out"
    args = ["predict", model, *inputs, "--columns", ",".join(cb.FEATURES), "--keep", "id",
            "--batch-size", "1000", "-o", f"{out}/", "--cluster", "local:2", "--json"]  # fmt: skip
    res = _cli(args)
    stdout, stderr = res.communicate(timeout=120)
    assert res.returncode == 0, stderr
    summary = json.loads(stdout)["result"]
    assert summary["workers"] == 2 and summary["cluster"]["kind"] == "local"
    assert summary["parts"] == 2 and summary["rows"] == 40_000
    # 2 single-threaded workers on this host: onnxruntime gets cores // 2 threads each
    assert summary["cluster"]["intra_op_threads"] == max(1, host_cores() // 2)
    assert cb.read_parts(out).equals(single)


def test_unreachable_scheduler_is_a_one_line_error_within_30_s(tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    data = cb.parquet_inputs(tmp_path, [10], row_group=10)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = _cli(["predict", model, data, "--columns", "f0,f1,f2,f3", "-o", f"{tmp_path}/out/",
                "--cluster", f"tcp://127.0.0.1:{port}"])  # fmt: skip
    _, stderr = res.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    errors = [line for line in stderr.splitlines() if not line.startswith("warning: ")]
    assert res.returncode == 7 and len(errors) == 1 and "Traceback" not in stderr
    assert f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'" in stderr
    assert not (tmp_path / "out").exists()


def test_version_mismatch_is_refused_before_any_work(tmp_path):
    fake = tmp_path / "fake"
    (fake / "modelforge-9.9.9.dist-info").mkdir(parents=True)
    (fake / "modelforge-9.9.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: modelforge\nVersion: 9.9.9\n"
    )
    model = str(cb.mlp(tmp_path / "m.onnx"))
    data = cb.parquet_inputs(tmp_path, [10], row_group=10)
    with (
        dask_cluster(tmp_path / "dask", workers=1, worker_path=str(fake)) as sched,
        pytest.raises(RuntimeFailure, match="runs modelforge 9.9.9") as err,
    ):
        predict_partitioned(model, data, f"{tmp_path}/out/", cluster=str(sched),
                                columns=cb.FEATURES)  # fmt: skip
    assert err.value.code == "version_mismatch" and not (tmp_path / "out").exists()


def test_auto_reads_dask_scheduler_address(cluster, tmp_path, monkeypatch):
    address = json.loads(Path(cluster).read_text())["address"]
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    import onnx

    model = str(cb.mlp(tmp_path / "m.onnx"))
    proto = onnx.load(model)  # bytes of its own: no worker has this model's session yet
    onnx.helper.set_model_props(proto, {"test": str(tmp_path)})
    onnx.save(proto, model)
    inputs = cb.parquet_inputs(tmp_path, [30, 30], row_group=10)
    out = tmp_path / "out"
    from distributed import Client

    from modelforge.cluster import worker

    with Client(address, timeout=30) as c:
        before = c.run(worker.cache_size)
    s = predict_partitioned(model, inputs, f"{out}/", cluster="auto", columns=cb.FEATURES,
                            keep=["id"], partition_rows=20)  # fmt: skip
    assert s.cluster["address"] == address and s.parts == 4 and s.workers == 2
    with Client(address, timeout=30) as c:
        after = c.run(worker.cache_size)
        configs = c.run(worker.session_configs)
    # one session per worker process for this (new) model: the prewarmed one is the one the
    # parts ran on, not a second one built with other thread settings
    assert {w: after[w] - before.get(w, 0) for w in after} == {w: 1 for w in after}
    # whose intra-op threads sleep between runs instead of spinning on the worker's cores
    assert {c["spinning"] for cs in configs.values() for c in cs} == {False}
    single = tmp_path / "single.parquet"
    predict_to(model, inputs, str(single), columns=cb.FEATURES, keep=["id"])
    assert cb.read_parts(out).equals(pq.read_table(single))


def test_the_model_survives_losing_every_worker_that_held_it(slow_job, tmp_path):
    """One worker: killing it loses every copy of the model's bytes; the scheduler
    recomputes them from the task's literal on the restarted worker."""
    model, inputs, single = slow_job
    out = tmp_path / "out"
    with dask_cluster(tmp_path / "dask", workers=1) as sched:
        t, box = _in_thread(predict_partitioned, model=model, inputs=inputs, out_dir=f"{out}/",
                            cluster=str(sched), **KW)  # fmt: skip
        _, pid = _until(lambda: _attempts(out)[:1], 60, "a part to start")[0]
        os.kill(pid, signal.SIGKILL)
        t.join(120)
    assert not t.is_alive() and "error" not in box, box.get("error")
    assert box["result"].workers_lost == 1 and box["result"].attempts >= 5
    assert cb.read_parts(out).equals(single)


def test_a_scheduler_without_workers_is_refused(tmp_path, monkeypatch):
    from modelforge.cluster import dask_executor as executor

    monkeypatch.setattr(executor, "CONNECT_TIMEOUT_S", 2.0)
    model = str(cb.mlp(tmp_path / "m.onnx"))
    data = cb.parquet_inputs(tmp_path, [10], row_group=10)
    with (
        dask_cluster(tmp_path / "dask", workers=0) as sched,
        pytest.raises(RuntimeFailure, match="has no workers") as err,
    ):
        predict_partitioned(model, data, f"{tmp_path}/out/", cluster=str(sched),
                            columns=cb.FEATURES)  # fmt: skip
    assert err.value.code == "cluster_no_workers" and not (tmp_path / "out").exists()


def test_local_workers_keep_glibcs_dynamic_mmap_threshold(tmp_path, monkeypatch):
    """Dask's default MALLOC_TRIM_THRESHOLD_=65536 is not passed to embedded workers."""
    from modelforge.cluster.dask_executor import Dask

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    ex = Dask("local:1")
    try:
        got = ex.client.run(os.getenv, "MALLOC_TRIM_THRESHOLD_")
        polars = ex.client.run(os.getenv, "POLARS_MAX_THREADS")
    finally:
        ex.close()
    assert list(got.values()) == [None]
    assert list(polars.values()) == [str(host_cores())]


def test_a_local_cluster_leaves_the_callers_environment_as_it_was(tmp_path, monkeypatch):
    """Dask's nanny sets OMP_NUM_THREADS=1, PYTHONHASHSEED, ... in the client process to pass
    them to its workers; a library caller's process gets its own environment back."""
    from modelforge.cluster.dask_executor import Dask

    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED", "__DASK_PARENT_PID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODELFORGE_TEST_CALLER", "before")
    before = dict(os.environ)
    ex = Dask("local:1")
    try:
        seen = ex.client.run(os.getenv, "OMP_NUM_THREADS")
        os.environ["MODELFORGE_TEST_CALLER"] = "set during the run"  # the caller's own
    finally:
        ex.close()
    assert list(seen.values()) == ["1"]  # the workers still get Dask's setting
    assert os.environ["MODELFORGE_TEST_CALLER"] == "set during the run"  # left alone
    assert dict(os.environ) == {**before, "MODELFORGE_TEST_CALLER": "set during the run"}
