"""The server's life under change and failure: signals, a vanishing store, restarts."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.builders import _model
from tests.serve_support import save, slow_model, start_server, wait_until

pytest.importorskip("uvicorn")


def scale_model(k: float):
    """x float32 [N, 4] -> y = k * x."""
    c = numpy_helper.from_array(np.array(k, dtype=np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[c],
    )
    return _model(graph)


def mf(env: dict, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "modelforge", *args],
        env=dict(os.environ, **env),
        check=True,
        capture_output=True,
        timeout=120,
    )


def call(port: int, path: str, body: dict | None = None, timeout: float = 10):
    """(status, headers, decoded JSON) or ("error", repr) for a dropped connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request("POST" if body is not None else "GET", path, data)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read() or b"null")
    except (ConnectionError, http.client.HTTPException) as exc:
        return "error", {}, repr(exc)
    finally:
        conn.close()


ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture
def store(tmp_path):
    env = {"MODELFORGE_HOME": str(tmp_path / "store")}
    for k in (1, 2):
        save(scale_model(float(k)), tmp_path / f"s{k}.onnx")
    mf(env, "models", "add", str(tmp_path / "s1.onnx"), "--name", "lin")
    return tmp_path, env


def test_sighup_is_answered_on_stderr_and_serving_goes_on(store):
    tmp_path, env = store
    server = start_server([], env=env)
    try:
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP received: nothing to reload" in server.stderr())
        status, _, answer = call(server.info["port"], "/v2/models/lin/infer", ROW)
        assert status == 200 and answer["outputs"][0]["data"] == [1, 2, 3, 4]
        assert server.proc.poll() is None and "Restarting it" not in server.stderr()
    finally:
        assert server.stop() == 0


def test_a_vanished_store_keeps_what_is_served_and_says_so(store):
    tmp_path, env = store
    server = start_server([], env=env)
    port = server.info["port"]
    root = tmp_path / "store"
    try:
        shutil.move(root, tmp_path / "away")
        wait_until(lambda: "cannot re-read the store" in server.stderr())
        assert "is gone; still serving what was loaded" in server.stderr()
        for _ in range(3):  # several polls later, still served, said once
            status, _, answer = call(port, "/v2/models/lin/infer", ROW)
            assert status == 200 and answer["model_version"] == "1"
        assert call(port, "/v2/health/ready")[0] == 200
        assert server.stderr().count("cannot re-read the store") == 1
        shutil.move(tmp_path / "away", root)
        wait_until(lambda: "can be read again" in server.stderr())
        mf(env, "models", "add", str(tmp_path / "s2.onnx"), "--name", "lin")
        wait_until(lambda: call(port, "/v2/models/lin/infer", ROW)[2]["model_version"] == "2")
    finally:
        assert server.stop() == 0


def test_while_a_worker_restarts_http_gets_503_not_a_hang_then_sigterm_exits_0(store):
    tmp_path, env = store
    server = start_server([], env=env)
    try:
        port = server.info["port"]
        os.kill(server.info["worker_pid"], signal.SIGKILL)
        seen = []

        def answered_by_stand_in():
            seen.append(call(port, "/v2/health/ready", timeout=5))
            return seen[-1][0] == 503

        wait_until(answered_by_stand_in, timeout=30, step=0.01)
        status, headers, answer = seen[-1]
        assert headers.get("retry-after") == "1" and "restarting after a crash" in answer["error"]
        assert all(s[0] in (200, 503) for s in seen), seen  # never a dropped connection
        wait_until(lambda: call(port, "/v2/health/ready")[0] == 200, timeout=60)
        assert call(port, "/v2/models/lin/infer", ROW)[0] == 200
        # killed again, then SIGTERM while the new worker loads: exit 0 at once, no traceback
        os.kill(_worker_pid(server), signal.SIGKILL)
        wait_until(lambda: call(port, "/v2/health/ready", timeout=5)[0] == 503, step=0.01)
        assert call(port, "/v2/health/live")[:1] == (200,)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == 0
        assert "Traceback" not in server.stderr()
    finally:
        server.stop()


def _worker_pid(server) -> int:
    """The current worker: the supervisor's one child."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(server.proc.pid)], capture_output=True, text=True
    )
    return int(out.stdout.split()[0])


def test_a_crash_loop_ends_with_exit_8_and_a_message(store):
    tmp_path, env = store
    server = start_server([], env=env)
    try:
        port = server.info["port"]
        gone = server.proc.poll
        for _ in range(6):  # MAX_RESTARTS + 1 deaths within the window
            wait_until(lambda: gone() is not None or call(port, "/v2/health/ready")[0] == 200, 60)
            if gone() is not None:
                break
            os.kill(_worker_pid(server), signal.SIGSEGV)
            wait_until(lambda: gone() is not None or call(port, "/v2/health/ready")[0] != 200)
        assert server.proc.wait(60) == 8
        err = server.stderr()
        assert "was killed by SIGSEGV" in err and "giving up" in err

    finally:
        server.stop()


def test_a_model_file_corrupted_on_disk_while_served(store):
    tmp_path, env = store
    for k in (2, 3):
        save(scale_model(float(k)), tmp_path / f"s{k}.onnx")
        mf(env, "models", "add", str(tmp_path / f"s{k}.onnx"), "--name", "lin")
    server = start_server([], env=env)
    port = server.info["port"]
    try:
        for v in (1, 3):  # 3 is loaded (the latest), 1 loads on first use
            (f,) = (tmp_path / "store" / "models" / "lin" / str(v) / "files").iterdir()
            f.unlink()
            f.write_bytes(b"not a model")
        status, _, answer = call(port, "/v2/models/lin/infer", ROW)  # its session is in memory
        assert status == 200 and answer["model_version"] == "3"
        status, _, answer = call(port, "/v2/models/lin/versions/1/infer", ROW)
        assert status == 503 and "lin:1" in answer["error"] and "corrupt" in answer["error"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v2/repository/index", b"{}")
        index = {e["version"]: e for e in json.loads(conn.getresponse().read())}
        conn.close()
        assert index["3"]["state"] == "READY" and index["2"]["state"] == "UNLOADED"
        assert "lin:1" in index["1"]["reason"] and index["2"]["reason"] == ""  # its own reason
    finally:
        assert server.stop() == 0


def test_models_rm_of_the_served_version_drains_its_requests_then_404(tmp_path):
    env = {"MODELFORGE_HOME": str(tmp_path / "store")}
    mf(env, "models", "add", str(save(slow_model(), tmp_path / "slow.onnx")), "--name", "slow")
    server = start_server(["--instances", "1", "--threads", "1", "--poll-interval", "0.2"], env=env)
    port = server.info["port"]
    x = np.ones((4096, 512), dtype=np.float32)  # over --max-batch-size: they run one by one
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], "outputs": [{"name": "y"}]}  # fmt: skip
    results: list = []
    try:
        threads = [
            threading.Thread(target=lambda: results.append(call(port, "/v2/models/slow/infer",
                                                                body, timeout=120)))
            for _ in range(3)
        ]  # fmt: skip
        for t in threads:
            t.start()
        wait_until(lambda: _gauge(port, "modelforge_requests_in_flight") >= 3)
        mf(env, "models", "rm", "slow:1", "--yes")
        for t in threads:
            t.join(120)
        assert [r[0] for r in results] == [200, 200, 200]  # in flight and queued: drained
        assert all(r[2]["model_version"] == "1" for r in results)
        status, _, answer = call(port, "/v2/models/slow/versions/1/infer", ROW)
        assert status == 404 and "(versions: none)" in answer["error"]
    finally:
        assert server.stop() == 0


def _gauge(port: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name + "{"))


def test_unload_while_a_version_loads_does_not_leave_it_loaded(tmp_path):
    env = {"MODELFORGE_HOME": str(tmp_path / "store")}
    for depth in (64, 65):  # two versions; 1 loads on first use (a run of 256 rows sizes it)
        path = save(slow_model(depth=depth), tmp_path / f"slow{depth}.onnx")
        mf(env, "models", "add", str(path), "--name", "slow")
    server = start_server([], env=env)
    port = server.info["port"]
    row = {"inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32", "data": [1.0] * 512}]}
    box: list = []
    try:
        t = threading.Thread(
            target=lambda: box.append(call(port, "/v2/models/slow/versions/1/infer", row, 60))
        )
        t.start()
        time.sleep(0.1)  # sets up the race (version 1 loading); nothing is timed
        assert call(port, "/v2/repository/models/slow/unload", {})[0] == 200
        t.join(60)
        status, _, answer = box[0]
        assert status == 503 and "unloaded" in answer["error"], box
        assert call(port, "/v2/repository/models/slow/load", {})[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v2/repository/index", b"{}")
        states = {e["version"]: e["state"] for e in json.loads(conn.getresponse().read())}
        conn.close()
        assert states == {"1": "UNLOADED", "2": "READY"}  # load loads the latest only
    finally:
        assert server.stop() == 0


IN_PROCESS = """
import sys
from modelforge.errors import UsageError
from modelforge.serve import ServeOptions, serve
try:
    serve([sys.argv[1]], ServeOptions(port=0, grpc_port=int(sys.argv[2])), supervise=False)
except UsageError as exc:
    print("refused:", exc.message)
"""


def test_a_grpc_port_in_use_is_one_line_and_exit_2(tmp_path):
    path = save(scale_model(1.0), tmp_path / "m.onnx")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    env = dict(os.environ, MODELFORGE_HOME=str(tmp_path / "store"))
    try:
        cli = [sys.executable, "-m", "modelforge", "serve", str(path), "--port", "0"]
        r = subprocess.run([*cli, "--grpc-port", str(port)], capture_output=True, text=True,
                           env=env, timeout=120)  # fmt: skip
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.startswith(f"error: cannot listen for gRPC on 127.0.0.1:{port}")
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        # the library without the supervisor: the worker-side check, a UsageError
        r = subprocess.run([sys.executable, "-c", IN_PROCESS, str(path), str(port)],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert r.returncode == 0 and "refused: cannot listen for gRPC" in r.stdout, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        holder.close()


def test_sigterm_to_the_worker_alone_is_a_restart_that_says_so(store):
    tmp_path, env = store
    server = start_server([], env=env)
    try:
        worker = server.info["worker_pid"]
        os.kill(worker, signal.SIGTERM)
        wait_until(lambda: "restarted server worker" in server.stderr(), timeout=60)
        err = server.stderr()
        assert f"worker (pid {worker}) was stopped on its own" in err
        assert f"pid {server.proc.pid}: stop the server with that pid" in err
        assert "requests in flight were lost" not in err
        assert call(server.info["port"], "/v2/models/lin/infer", ROW)[0] == 200
    finally:
        assert server.stop() == 0


def three_outputs(k: float, width: int):
    """x float32 [N, width] -> y = k * x, z = x + k, s = -x."""
    c = numpy_helper.from_array(np.array(k, dtype=np.float32), "k")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "k"], ["y"]),
            helper.make_node("Add", ["x", "k"], ["z"]),
            helper.make_node("Neg", ["x"], ["s"]),
        ],
        "three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", width]) for n in "yzs"],
        initializer=[c],
    )
    return _model(graph)


def test_batching_under_stress_every_row_checked_and_counts_exact(tmp_path):
    import random

    import onnxruntime as ort

    hc = pytest.importorskip("tritonclient.http")
    gc = pytest.importorskip("tritonclient.grpc")
    env = {"MODELFORGE_HOME": str(tmp_path / "store")}
    sessions = {}
    for name, width in (("a", 4), ("b", 7)):
        for k in (1, 2):
            path = save(three_outputs(float(k), width), tmp_path / f"{name}{k}.onnx")
            mf(env, "models", "add", str(path), "--name", name)
            sessions[(name, k)] = ort.InferenceSession(str(path))
    server = start_server(["--grpc-port", "0", "--max-batch-size", "8", "--instances", "1",
                           "--threads", "1", "--max-queue-delay", "2000"], env=env)  # fmt: skip
    errors: list = []
    sent: dict = {}
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        http_cli = hc.InferenceServerClient(server.hostport)
        grpc_cli = gc.InferenceServerClient(server.grpc)
        for i in range(15):
            name, v = rng.choice("ab"), rng.choice((1, 2))
            rows = rng.choice((1, 2, 3, 5, 8, 9, 13))  # 9 and 13: over --max-batch-size
            width = 4 if name == "a" else 7
            x = np.arange(rows * width, dtype=np.float32).reshape(rows, width) + seed * 100 + i
            outs = rng.sample("yzs", rng.randint(1, 3))
            kind = rng.choice(("binary", "json", "grpc"))
            try:
                if kind == "grpc":
                    inp = gc.InferInput("x", list(x.shape), "FP32")
                    inp.set_data_from_numpy(x)
                    asked = [gc.InferRequestedOutput(o) for o in outs]
                    r = grpc_cli.infer(name, [inp], model_version=str(v), outputs=asked)
                    got = {o.name for o in r.get_response().outputs}
                    version = r.get_response().model_version
                else:
                    inp = hc.InferInput("x", list(x.shape), "FP32")
                    inp.set_data_from_numpy(x, binary_data=kind == "binary")
                    asked = [hc.InferRequestedOutput(o, binary_data=kind == "binary") for o in outs]
                    r = http_cli.infer(name, [inp], model_version=str(v), outputs=asked)
                    got = {o["name"] for o in r.get_response()["outputs"]}
                    version = r.get_response()["model_version"]
                expected = dict(zip("yzs", sessions[(name, v)].run(None, {"x": x}), strict=True))
                if got != set(outs) or version != str(v):
                    errors.append((kind, name, v, outs, got, version))
                errors.extend(
                    (kind, name, v, rows, o)
                    for o in outs
                    if not np.array_equal(r.as_numpy(o), expected[o])
                )
            except Exception as exc:  # counted as an error, shown in the assertion
                errors.append((kind, name, v, rows, repr(exc)[:200]))
            with lock:
                sent[(name, v)] = sent.get((name, v), 0) + 1

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:5]
        http_cli = hc.InferenceServerClient(server.hostport)
        for (name, v), n in sent.items():
            st = http_cli.get_inference_statistics(name, str(v))["model_stats"][0]
            assert st["inference_stats"]["success"]["count"] == n
            assert st["inference_stats"]["fail"]["count"] == 0
        metric = "modelforge_inference_request_success_total"
        assert _gauge(server.info["port"], metric) == sum(sent.values()) == 12 * 15
    finally:
        assert server.stop() == 0


def test_a_store_emptied_and_filled_again_serves_the_new_models(store):
    tmp_path, env = store
    server = start_server([], env=env)
    port = server.info["port"]
    try:
        assert call(port, "/v2/models/lin/infer", ROW)[2]["outputs"][0]["data"] == [1, 2, 3, 4]
        shutil.rmtree(tmp_path / "store")  # the numbers are given out again: lin:1 is k=2
        mf(env, "models", "add", str(tmp_path / "s2.onnx"), "--name", "lin")
        wait_until(lambda: "was replaced in the store" in server.stderr())
        status, _, answer = call(port, "/v2/models/lin/infer", ROW)
        assert status == 200 and answer["model_version"] == "1"
        assert answer["outputs"][0]["data"] == [2, 4, 6, 8]
    finally:
        assert server.stop() == 0
