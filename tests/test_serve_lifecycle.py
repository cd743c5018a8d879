"""Server lifecycle: batching merges queued requests, admission, crash restart, shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading

import numpy as np
import onnxruntime as ort
import pytest

from tests.serve_support import pick_model, save, slow_model, start_server, wait_until

httpclient = pytest.importorskip("tritonclient.http")
WIDTH = 512
SLOW_ROWS = 2048  # ~0.7 s per run on a free core; small requests take ~3 ms


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow")
    path = save(slow_model(), root / "slow.onnx")
    pick = save(pick_model(), root / "pick.onnx")
    server = start_server(
        [
            str(path),
            str(pick),
            "--instances",
            "1",
            "--threads",
            "1",
            "--max-queue",
            "6",
            "--max-batch-size",
            "64",
            "--access-log",
        ],
        env={"MODELFORGE_HOME": str(root / "store")},
    )
    yield {"server": server, "path": path, "pick": pick}
    server.stop()


def infer(server, x, timeout=60):
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v2/models/slow/infer",
            body + x.tobytes(),
            {"Inference-Header-Content-Length": str(len(body))},
        )
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return resp.status, dict(resp.getheaders()), json.loads(data)
        hl = int(resp.getheader("inference-header-content-length"))
        meta = json.loads(data[:hl])
        y = np.frombuffer(data[hl:], dtype=np.float32).reshape(meta["outputs"][0]["shape"])
        return 200, dict(resp.getheaders()), y
    finally:
        conn.close()


def _expected(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so).run(None, {"x": x})[0]


def _busy(server, rows=SLOW_ROWS):
    """Start a long request in the background; returns (thread, result box)."""
    box: list = []
    x = np.ones((rows, WIDTH), dtype=np.float32)
    t = threading.Thread(target=lambda: box.append(infer(server, x)))
    t.start()
    return t, box


def _stats(server):
    client = httpclient.InferenceServerClient(server.hostport)
    return client.get_inference_statistics("slow", "1")["model_stats"][0]


def gauge(server, name) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def busy(server) -> float:
    return gauge(server, "modelforge_instances_busy")


def test_queued_requests_merge_into_one_run_with_their_own_rows(slow):
    server = slow["server"]
    before = _stats(server)["execution_count"]
    t, box = _busy(server)
    wait_until(lambda: busy(server) >= 1)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), WIDTH)).astype(np.float32) for _ in range(5)]
    results: dict[int, tuple] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, infer(server, xs[i])))
        for i in range(len(xs))
    ]
    for th in threads:
        th.start()
    for th in threads + [t]:
        th.join(60)
    assert box and box[0][0] == 200
    for i, x in enumerate(xs):
        status, _, y = results[i]
        assert status == 200
        np.testing.assert_allclose(y, _expected(slow["path"], x), rtol=1e-4, atol=1e-5)
    # the small requests queued behind the long one: they shared runs (fewer runs than
    # requests), and each still got exactly its own rows back (checked above)
    runs = _stats(server)["execution_count"] - before - 1
    assert 1 <= runs < len(xs), runs


def _pick(server, x, idx):
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.ravel().tolist(),
                },
                {
                    "name": "idx",
                    "shape": list(idx.shape),
                    "datatype": "INT64",
                    "data": idx.ravel().tolist(),
                },
            ]
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=60)
    try:
        conn.request("POST", "/v2/models/pick/infer", body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_one_failing_request_in_a_merged_batch_fails_alone(slow):
    server = slow["server"]
    big = np.ones((SLOW_ROWS, WIDTH), dtype=np.float32)
    box: list = []
    t = threading.Thread(
        target=lambda: box.append(_pick(server, big, np.zeros((SLOW_ROWS, 1), dtype=np.int64)))
    )
    t.start()
    wait_until(lambda: _busy_pick(server))
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(2, WIDTH)).astype(np.float32) for _ in range(3)]
    idxs = [np.array([[1], [2]]), np.array([[999], [0]]), np.array([[3], [4]])]
    results: dict[int, tuple] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, _pick(server, xs[i], idxs[i])))
        for i in range(3)
    ]
    for th in threads:
        th.start()
    for th in [*threads, t]:
        th.join(60)
    assert box[0][0] == 200
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(slow["pick"]), so)
    for i in (0, 2):
        status, out = results[i]
        assert status == 200, out
        want = sess.run(None, {"x": xs[i], "idx": idxs[i]})[0]
        np.testing.assert_allclose(
            np.array(out["outputs"][0]["data"]).reshape(2, 1), want, rtol=1e-4, atol=1e-5
        )
    status, out = results[1]
    assert status == 400 and "onnxruntime" in out["error"], out


def _busy_pick(server) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return any(
        line.startswith('modelforge_instances_busy{model="pick"')
        and float(line.rsplit(" ", 1)[1]) >= 1
        for line in text.splitlines()
    )


def test_full_queue_is_503_with_retry_after(slow):
    server = slow["server"]
    t, box = _busy(server)
    wait_until(lambda: busy(server) >= 1)
    x = np.ones((SLOW_ROWS // 4, WIDTH), dtype=np.float32)  # too big to merge: 64-row cap
    results: list = []
    lock = threading.Lock()

    def one():
        r = infer(server, x)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads + [t]:
        th.join(120)
    refused = [r for r in results if r[0] == 503]
    assert refused, [r[0] for r in results]
    status, headers, err = refused[0]
    assert headers.get("retry-after") == "1" and "--max-queue" in err["error"]
    assert all(r[0] in (200, 503) for r in results)


def test_worker_crash_is_reported_and_restarted_on_the_same_port(slow):
    server = slow["server"]
    old = server.info["worker_pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: "restarted server worker" in server.stderr(), timeout=60)
    assert "was killed by SIGKILL" in server.stderr()
    assert server.proc.poll() is None
    status, _, y = infer(server, np.ones((1, WIDTH), dtype=np.float32))
    assert status == 200 and y.shape == (1, WIDTH)


def test_sigterm_lets_in_flight_requests_finish_then_exits_0(slow):
    server = slow["server"]
    runs = [_busy(server) for _ in range(3)]
    wait_until(lambda: gauge(server, "modelforge_requests_in_flight") >= 3)
    server.proc.send_signal(signal.SIGTERM)
    for t, _ in runs:
        t.join(60)
    assert [box[0][0] for _, box in runs] == [200, 200, 200]
    assert server.proc.wait(15) == 0
    wait_until(lambda: '"POST /v2/models/slow/infer" 200' in server.stderr())  # --access-log


def test_sigterm_lets_in_flight_grpc_calls_finish_then_exits_0(tmp_path):
    """gRPC calls running or queued at SIGTERM get their answers; the process exits 0."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    path = save(slow_model(), tmp_path / "slow.onnx")
    server = start_server(
        [str(path), "--grpc-port", "0", "--instances", "1", "--threads", "1"],
        env={"MODELFORGE_HOME": str(tmp_path / "store")},
    )
    try:
        x = np.ones((SLOW_ROWS, WIDTH), dtype=np.float32)
        want = _expected(path, x)
        results: list = []

        def call() -> None:
            client = grpcclient.InferenceServerClient(server.grpc)
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            try:
                results.append(client.infer("slow", [inp], client_timeout=60).as_numpy("y"))
            except Exception as exc:  # recorded: the assertion below names it
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: gauge(server, "modelforge_requests_in_flight") >= 3)
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(90)
        assert len(results) == 3
        for got in results:
            assert isinstance(got, np.ndarray), str(got)
            np.testing.assert_allclose(got, want, rtol=1e-5)
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_sigterm_ends_an_idle_grpc_stream_instead_of_waiting_out_the_grace(tmp_path):
    """An open stream with nothing in flight does not hold the server for the grace period
    (8 s): it ends, and the process exits 0 at once."""
    import queue

    grpcclient = pytest.importorskip("tritonclient.grpc")
    path = save(slow_model(8, 2), tmp_path / "small.onnx")
    server = start_server([str(path), "--grpc-port", "0"],
                          env={"MODELFORGE_HOME": str(tmp_path / "store")})  # fmt: skip
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        got: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        inp = grpcclient.InferInput("x", [2, 8], "FP32")
        inp.set_data_from_numpy(np.ones((2, 8), dtype=np.float32))
        client.async_stream_infer("small", [inp], request_id="one")
        result, error = got.get(timeout=30)
        assert error is None and result.get_response().id == "one"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(5) == 0
    finally:
        client.stop_stream()
        server.stop()
