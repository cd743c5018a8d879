"""``--loop-cpu auto``: the Python threads on one CPU, moved off it when another program
crowds it, never moved by the server's own load. Real processes and real CPU hogs."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

import pytest

from tests import builders
from tests.serve_support import save, start_server

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux CPU affinity and 2 CPUs",
)

HOG = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


def _affinity(pid: int, tid: int) -> set[int]:
    return os.sched_getaffinity(tid) if pid == os.getpid() else _read_allowed(pid, tid)


def _read_allowed(pid: int, tid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{tid}/status") as fh:
        for line in fh:
            if line.startswith("Cpus_allowed_list:"):
                out: set[int] = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    lo, _, hi = part.partition("-")
                    out.update(range(int(lo), int(hi or lo) + 1))
                return out
    raise AssertionError("no Cpus_allowed_list")


def _pinned_to(pid: int, cpus: set[int]) -> set[int]:
    """The threads of ``pid`` whose CPU set is ``cpus``."""
    return {int(t) for t in os.listdir(f"/proc/{pid}/task") if _affinity(pid, int(t)) == cpus}


def _infer(port: int) -> int:
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1] * 8}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v2/models/lin/infer", json.dumps(body))
        return conn.getresponse().status
    finally:
        conn.close()


def test_auto_moves_the_loop_and_instance_threads_off_a_crowded_cpu(tmp_path):
    path = save(builders.linear(4, 2, seed=0), tmp_path / "lin.onnx")
    server = start_server(
        [str(path), "--loop-cpu", "auto"], env={"MODELFORGE_HOME": str(tmp_path / "s")}
    )
    hog = None
    try:
        port, pid = server.info["port"], server.info["worker_pid"]
        assert _infer(port) == 200  # starts the instance thread
        start = _affinity(pid, pid)
        assert len(start) == 1  # pinned to one CPU
        threads = _pinned_to(pid, start)
        assert len(threads) >= 2  # the loop and the instance thread it started
        (crowded,) = start
        hog = subprocess.Popen([sys.executable, "-c", HOG, str(crowded)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _affinity(pid, pid) == start:
            time.sleep(0.25)
        moved = _affinity(pid, pid)
        assert moved != start and len(moved) == 1, "the loop stayed on the crowded CPU"
        assert threads <= _pinned_to(pid, moved)  # every pinned thread followed
        assert len(_pinned_to(pid, moved)) < len(os.listdir(f"/proc/{pid}/task"))  # not ort's
        assert _infer(port) == 200
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        assert server.stop() == 0


MOVER = """
import os, sys, time
from modelforge.serve import affinity
mover = affinity.Mover()
results = []
for _ in range(3):  # this thread (pinned) keeps its CPU busy: its own load, not another's
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        pass
    results.append(mover.check())
print(results, mover.cpu, sorted(os.sched_getaffinity(0)))
"""


def test_auto_is_not_moved_by_the_servers_own_load():
    """The pinned thread spinning alone is its own load: the mover stays put (a mover that
    counted it as crowding would move on every check, since the thread uses 100%)."""
    r = subprocess.run([sys.executable, "-c", MOVER], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    results = r.stdout.split("]", 1)[0] + "]"
    assert "None" in results, r.stdout


def test_auto_is_the_default_and_off_leaves_the_threads_to_the_kernel(tmp_path):
    path = save(builders.linear(4, 2, seed=0), tmp_path / "lin.onnx")
    everything = os.sched_getaffinity(0)
    for args, pinned in (([], True), (["--loop-cpu", "off"], False)):
        server = start_server([str(path), *args], env={"MODELFORGE_HOME": str(tmp_path / "s")})
        try:
            pid = server.info["worker_pid"]
            assert _infer(server.info["port"]) == 200
            loop = _affinity(pid, pid)
            assert (len(loop) == 1) if pinned else (loop == everything), (args, loop)
        finally:
            assert server.stop() == 0


INSTANCES = """
import os, threading
from modelforge.serve import affinity
from modelforge.serve.batcher import _Instance
full = sorted(os.sched_getaffinity(0))
affinity.pin_loop(full[0])  # this thread plays the pinned event loop
out = {}
for colocate in (True, False):
    inst, done = _Instance("t", colocate), threading.Event()
    def job(c=colocate):
        out[c] = sorted(os.sched_getaffinity(0))
        done.set()
    inst.submit(job)
    done.wait(30)
    inst.stop()
print(out == {True: [full[0]], False: full}, out)
"""


def test_an_instance_thread_with_long_runs_leaves_the_loops_cpu():
    """Started by the pinned loop, an instance thread inherits its CPU: a colocated one
    keeps it, any other one takes every CPU back."""
    r = subprocess.run(
        [sys.executable, "-c", INSTANCES], capture_output=True, text=True, timeout=60
    )
    assert r.stdout.startswith("True"), r.stdout + r.stderr


@pytest.mark.parametrize(
    ("instances", "threads", "chosen", "expected"),
    [(1, None, 1, True), (2, None, 1, False), (1, 1, 1, False), (1, None, 2, False)],
)
def test_auto_colocates_only_one_instance_of_a_short_running_model(
    instances, threads, chosen, expected
):
    from types import SimpleNamespace

    from modelforge.serve.options import ServeOptions
    from modelforge.serve.registry import _short_runs

    opts = ServeOptions(instances=instances, threads=threads)
    assert _short_runs(opts, SimpleNamespace(threads=chosen)) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("idle", "others", "expected"),
    [
        ({0: 0.0, 1: 0.95}, 0.9, 1),  # a hog here, the other CPU free: move
        ({0: 0.0, 1: 0.0}, 0.9, None),  # a hog here, but nowhere better to go
        ({0: 0.0, 1: 0.9}, 0.2, None),  # the pinned threads themselves keep it busy
        ({0: 0.4, 1: 0.5}, 0.35, None),  # crowded a little; 0.5 idle there is not better
        ({0: 0.0, 1: 0.3, 2: 0.9, 3: 0.9}, 0.6, 2),  # the idlest, lowest-numbered CPU
        ({0: 0.0}, 1.0, None),  # one CPU: nowhere to go
    ],
)
def test_the_mover_goes_only_where_more_time_is_free(idle, others, expected):
    from modelforge.serve.affinity import choose

    assert choose(idle, 0, others) == expected


def test_loop_cpu_takes_a_number_auto_or_off():
    r = subprocess.run(
        [sys.executable, "-m", "modelforge", "serve", "--loop-cpu", "two"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "--loop-cpu must be a CPU number, auto or off (got 'two')" in r.stderr
    assert "Traceback" not in r.stderr
