"""Regressions from the serve review: inline-run failures, row-mixing models and batching,
strict JSON values, 0-row ZipMap outputs, clients that disconnect, start-up checks."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper

from modelforge.errors import UsageError
from modelforge.serve.options import ServeOptions
from tests import builders
from tests.builders import _model
from tests.model_zoo import zipmap_classifier
from tests.serve_support import save, self_signed_cert, slow_model, start_server, wait_until

httpclient = pytest.importorskip("tritonclient.http")


def center_model():
    """y = x - ReduceMean(x, axis=0): every output row depends on every input row."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ],
        "center",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    return _model(graph, opset=15)


def gather_model():
    """y = GatherElements(x [N, 3], idx [N, 1], axis=1): idx >= 3 fails in onnxruntime."""
    graph = helper.make_graph(
        [helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)],
        "gather",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    return _model(graph)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixes")
    files = {
        "ident": save(builders.identity(shape=("N", 3)), root / "ident.onnx"),
        "center": save(center_model(), root / "center.onnx"),
        "gather": save(gather_model(), root / "gather.onnx"),
        "lin": save(builders.linear(3, 2), root / "lin.onnx"),
        "zipmap": zipmap_classifier(root / "zipmap.onnx"),
        "slow": save(slow_model(), root / "slow.onnx"),
    }
    server = start_server(
        [
            *map(str, files.values()),
            "--threads",
            "1",
            "--request-timeout",
            "20",
            "--inline-below",
            "300",
        ],
        env={"MODELFORGE_HOME": str(root / "store")},
    )
    yield {"server": server, "files": files, "root": root}
    assert server.stop() == 0, server.stderr()


def post(server, path, obj, timeout=30, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=timeout)
    try:
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def get(server, path):
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def x_item(data, shape=(1, 3), **extra):
    return {"name": "x", "shape": list(shape), "datatype": "FP32", "data": data, **extra}


# -- F5: a failing inline run never wedges the version -------------------------------------
def test_empty_outputs_means_all_and_failing_inline_runs_leave_the_version_serving(fx):
    server = fx["server"]
    ok = {"inputs": [x_item([1, 2, 3])]}
    for _ in range(20):  # measured runs far under --inline-below: lone requests run inline
        assert post(server, "/v2/models/ident/infer", ok)[0] == 200
    status, out = post(server, "/v2/models/ident/infer", {**ok, "outputs": []})
    assert status == 200, out
    assert [o["name"] for o in out["outputs"]] == ["out"] and out["outputs"][0]["data"] == [1, 2, 3]
    good = {
        "inputs": [x_item([1, 2, 3]), {**x_item([0], (1, 1)), "name": "idx", "datatype": "INT64"}]
    }
    bad = {
        "inputs": [x_item([1, 2, 3]), {**x_item([7], (1, 1)), "name": "idx", "datatype": "INT64"}]
    }
    for _ in range(20):
        assert post(server, "/v2/models/gather/infer", good)[0] == 200
    for _ in range(3):
        status, out = post(server, "/v2/models/gather/infer", bad)
        assert status == 400 and set(out) == {"error"}, out
        status, out = post(server, "/v2/models/gather/infer", good, timeout=10)
        assert status == 200 and out["outputs"][0]["data"] == [1], out
    assert post(server, "/v2/models/ident/infer", ok, timeout=10)[0] == 200


# -- F1: models that mix rows are not batched ----------------------------------------------
def test_row_mixing_model_is_not_batched_and_every_answer_is_right(fx):
    server = fx["server"]
    assert "center" in server.stderr() and "dynamic batching is off" in server.stderr()
    models = {m["name"]: m for m in server.info["models"]}
    assert models["center"]["batching"] == [] and models["lin"]["batching"] == [1]
    status, raw = get(server, "/v2/models/center/config")
    assert status == 200 and "dynamic_batching" not in json.loads(raw)
    status, raw = get(server, "/v2/models/lin/config")
    assert status == 200 and "dynamic_batching" in json.loads(raw)
    wrong: list[tuple] = []
    errors: list[str] = []

    def client(k: int) -> None:
        cl = httpclient.InferenceServerClient(server.hostport)
        for j in range(15):
            a = (np.random.default_rng(k * 100 + j).normal(size=(2, 3)) * 10 + k).astype(np.float32)
            inp = httpclient.InferInput("x", [2, 3], "FP32")
            inp.set_data_from_numpy(a)
            try:
                y = cl.infer("center", [inp]).as_numpy("y")
            except Exception as exc:  # a failed request is a failure of this test too
                errors.append(str(exc)[:200])
                continue
            if not np.allclose(y, a - a.mean(0, keepdims=True), atol=1e-4):
                wrong.append((k, j))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not wrong, (errors[:3], wrong[:3])


def test_batching_on_skips_the_probe(tmp_path):
    path = save(center_model(), tmp_path / "center.onnx")
    server = start_server([str(path), "--batching", "on"])
    try:
        assert server.info["models"][0]["batching"] == [1]
        assert "dynamic batching is off" not in server.stderr()
    finally:
        assert server.stop() == 0


# -- F2, F3, F7, F8: strict request values --------------------------------------------------
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": [x_item([None, 1, 2])]}, ["'x'", "not numbers"]),
        ({"inputs": [x_item([True, False, True])]}, ["'x'", "not numbers"]),
        ({"inputs": [x_item(["1", "2", "3"])]}, ["'x'", "not numbers"]),
        ({"inputs": [x_item([1e300, 1, 2])]}, ["'x'", "outside the FP32 range"]),
        (
            {"inputs": [x_item([1, 2, 3], parameters={"binary_data_size": 12})]},
            ["'x'", "both 'data' and binary_data_size"],
        ),
        (
            {"inputs": [x_item([1, 2, 3])], "parameters": {"binary_data_output": "false"}},
            ["binary_data_output", "true or false"],
        ),
        (
            {
                "inputs": [x_item([1, 2, 3])],
                "outputs": [{"name": "out", "parameters": {"binary_data": "no"}}],
            },
            ["binary_data", "output 'out'", "true or false"],
        ),
        ({"inputs": [x_item([1, 2, 3])], "outputs": [{}]}, ["outputs[0]", "'name'"]),
    ],
)
def test_bad_values_are_400_naming_the_input(fx, body, words):
    payload = json.dumps(body).encode()
    headers = {}
    if b"binary_data_size" in payload:
        headers = {"Inference-Header-Content-Length": str(len(payload))}
        payload += np.zeros(3, np.float32).tobytes()
    status, out = post(fx["server"], "/v2/models/ident/infer", payload, headers=headers)
    assert status == 400 and set(out) == {"error"}, out
    for w in words:
        assert w in out["error"], (w, out["error"])


def test_no_numpy_warning_reaches_stderr(fx):
    server = fx["server"]
    post(server, "/v2/models/ident/infer", {"inputs": [x_item([1e300, 1, 2])]})
    ok = {"inputs": [x_item([1.5, -2, 3e38])], "parameters": {"binary_data_output": False}}
    status, out = post(server, "/v2/models/ident/infer", ok)
    assert status == 200 and out["outputs"][0]["data"] == [1.5, -2, pytest.approx(3e38)]
    assert "RuntimeWarning" not in server.stderr()


# -- F11: ZipMap with 0 rows keeps its labels --------------------------------------------
def test_zipmap_with_no_rows_has_the_model_labels(fx):
    body = {"inputs": [{"name": "X", "shape": [0, 3], "datatype": "FP32", "data": []}]}
    status, out = post(fx["server"], "/v2/models/zipmap/infer", body)
    assert status == 200, out
    prob = [o for o in out["outputs"] if o["name"] == "output_probability"][0]
    assert prob["shape"] == [0, 2] and prob["parameters"]["labels"] == [0, 1], prob


# -- F16: a client that disconnected is not a success -------------------------------------
def _slow_stats(server):
    client = httpclient.InferenceServerClient(server.hostport)
    return client.get_inference_statistics("slow", "1")["model_stats"][0]


def test_disconnected_clients_are_dropped_not_counted_as_successes(fx):
    server = fx["server"]
    before = _slow_stats(server)
    big = np.ones((4096, 512), np.float32)
    box: list[int] = []

    def busy() -> None:
        head = {
            "inputs": [
                {
                    "name": "x",
                    "shape": [4096, 512],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": big.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
        h = json.dumps(head).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=120)
        conn.request(
            "POST",
            "/v2/models/slow/infer",
            body=h + big.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(h))},
        )
        box.append(conn.getresponse().status)
        conn.close()

    t = threading.Thread(target=busy)
    t.start()
    wait_until(
        lambda: (
            _slow_stats(server)["execution_count"] > before["execution_count"]
            or b"modelforge_instances_busy{" in get(server, "/metrics")[1]
            and _busy(server) >= 1
        ),
        timeout=60,
        step=0.02,
    )
    small = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32", "data": [0.0] * 512}]}
    ).encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.info["port"])) as s:
            s.sendall(
                b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(small)).encode()
                + b"\r\n\r\n"
                + small
            )
    wait_until(
        lambda: (
            _slow_stats(server)["inference_stats"]["fail"]["count"]
            >= before["inference_stats"]["fail"]["count"] + 3
        ),
        timeout=60,
    )
    t.join(120)
    assert box == [200]
    after = _slow_stats(server)
    assert (
        after["inference_stats"]["success"]["count"]
        == before["inference_stats"]["success"]["count"] + 1
    )
    assert (
        after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 3
    )


def _busy(server) -> float:
    text = get(server, "/metrics")[1].decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelforge_instances_busy{") and 'model="slow"' in line
    )


# -- F12-F15: refused before any worker starts --------------------------------------------
def _cli(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "modelforge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **(env or {})),
    )


def _one_line(r, code, *words):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and not r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_empty_or_blank_token_is_refused(tmp_path):
    path = save(builders.linear(), tmp_path / "m.onnx")
    _one_line(
        _cli("serve", str(path), "--port", "0", env={"MODELFORGE_SERVE_TOKEN": ""}),
        2,
        "MODELFORGE_SERVE_TOKEN",
        "empty",
    )
    _one_line(_cli("serve", str(path), "--port", "0", "--token", "  "), 2, "--token", "empty")
    _one_line(_cli("serve", str(path), "--port", "0", "--token", ""), 2, "--token", "empty")
    for token in ("", " \t", " padded "):
        with pytest.raises(UsageError):
            ServeOptions(token=token).validate()


def test_bad_tls_files_are_one_line_naming_the_file(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = self_signed_cert(tmp_path)
    path = save(builders.linear(), tmp_path / "m.onnx")
    nope = tmp_path / "nope.pem"
    r = _cli("serve", str(path), "--port", "0", "--tls-cert", str(nope), "--tls-key", str(key))
    _one_line(r, 3, "--tls-cert", "nope.pem", "does not exist")
    r = _cli("serve", str(path), "--port", "0", "--tls-cert", str(key), "--tls-key", str(cert))
    _one_line(r, 2, "--tls-cert", "key.pem", "swapped")


def test_unreachable_name_and_bad_host_hints(tmp_path):
    path = save(builders.linear(), tmp_path / "m.onnx")
    r = _cli("serve", str(path), "--port", "0", "--name", "bad/name", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "invalid_name"
    _one_line(
        _cli("serve", str(path), "--port", "0", "--host", "256.1.1.1"),
        2,
        "cannot listen on 256.1.1.1",
        "--host",
    )


# -- --loop-cpu: the Python threads on one CPU, onnxruntime's threads free -----------------
def _allowed(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/status") as fh:
        for line in fh:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_loop_cpu_pins_the_loop_not_the_sessions_threads(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    path = save(builders.linear(4, 2, seed=0), tmp_path / "lin.onnx")
    server = start_server(
        [str(path), "--loop-cpu", str(cpus[0])], env={"MODELFORGE_HOME": str(tmp_path / "s")}
    )
    try:
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1] * 8}]}
        conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=30)
        conn.request("POST", "/v2/models/lin/infer", json.dumps(body))
        assert conn.getresponse().status == 200
        conn.close()
        pid = server.info["worker_pid"]
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert _allowed(pid, pid) == str(cpus[0])  # the event loop (the main thread)
        if len(cpus) > 1:  # threads started before the pin (onnxruntime's) keep every CPU
            assert any(_allowed(pid, t) != str(cpus[0]) for t in tids)
    finally:
        assert server.stop() == 0


def test_loop_cpu_outside_the_allowed_set_is_a_usage_error():
    with pytest.raises(UsageError, match="--loop-cpu 100000"):
        ServeOptions(loop_cpu=100000).validate()


def test_affinity_helpers_pin_instances_and_unpin_loaders():
    """In a child process (pinning is per thread, and process-wide state): a thread started
    by the pinned loop inherits the pin, pin_here keeps it, unpin_here restores every CPU."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux CPU affinity and 2 CPUs")
    code = """
import os, threading
from modelforge.serve import affinity
full = sorted(os.sched_getaffinity(0))
out = {}
def loop():
    affinity.pin_loop(full[0])
    def inst():
        affinity.pin_here(); out["instance"] = sorted(os.sched_getaffinity(0))
    def loader():
        affinity.unpin_here(); out["loader"] = sorted(os.sched_getaffinity(0))
    for f in (inst, loader):
        t = threading.Thread(target=f); t.start(); t.join()
    out["loop"] = sorted(os.sched_getaffinity(0))
t = threading.Thread(target=loop); t.start(); t.join()
out["main"] = sorted(os.sched_getaffinity(0))
print(out == {"instance": [full[0]], "loader": full, "loop": [full[0]], "main": full}, out)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("True"), r.stdout + r.stderr


def test_small_models_get_one_intra_op_thread_unless_threads_are_given(tmp_path):
    """Without --threads: a model whose full batch (--max-batch-size rows) runs under 1 ms
    on one thread gets one (waking sleeping pool threads costs more than they save); a slow
    model gets cores / instances. --threads is taken as given."""
    cores = os.cpu_count() or 1
    lin = save(builders.linear(4, 2, seed=0), tmp_path / "lin.onnx")
    slow = save(slow_model(), tmp_path / "slow.onnx")
    env = {"MODELFORGE_HOME": str(tmp_path / "s")}
    server = start_server([str(lin), str(slow)], env=env)
    try:
        threads = {m["name"]: m["threads"] for m in server.info["models"]}
        assert threads == {"lin": {"1": 1}, "slow": {"1": cores}}
    finally:
        assert server.stop() == 0
    if cores >= 2:
        server = start_server([str(lin), "--threads", "2"], env=env)
        try:
            assert server.info["models"][0]["threads"] == {"1": 2}
        finally:
            assert server.stop() == 0


@pytest.mark.parametrize(
    ("data", "found"),
    [
        ([0.25] * 500 + [True] + [0.75] * 500, True),  # one suspect among many: looked up
        ([0.25] * 500 + [1] + [0.75] * 500, False),  # the integer 1 is not a true
        ([[0.5, 2.0]] * 300 + [[False, 3.0]], True),  # nested: the flattened position
        ([[0.5, 2.0]] * 300 + [[0, 3.0]], False),
        ([1, 0] * 400 + [True], True),  # mostly 0/1: every value's type
        ([1, 0] * 400, False),
        (True, True),
        (1.0, False),
    ],
)
def test_true_false_among_numbers_are_found_wherever_they_are(data, found):
    """The bool check looks only at values numpy read as 0 or 1, by their flat position."""
    from modelforge.serve.tensors import holds_bool

    assert holds_bool(data, np.asarray(data)) is found


def test_malformed_requests_are_logged_once_a_minute_not_once_each(tmp_path):
    """uvicorn warns for each malformed request; hostile traffic must not flood stderr."""
    path = save(builders.linear(), tmp_path / "lin.onnx")
    server = start_server([str(path), "--access-log"],
                          env={"MODELFORGE_HOME": str(tmp_path / "store")})  # fmt: skip
    try:
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", server.info["port"]), timeout=10) as s:
                s.sendall(b"BREW /v2 HTCPCP/1.0\r\n\r\n")
                while s.recv(4096):  # answered (a JSON 400), then closed
                    pass
        conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=10)
        conn.request("GET", "/v2/health/live")
        assert conn.getresponse().status == 200
        conn.close()
        # the access line comes after every warning logged before it
        wait_until(lambda: '"GET /v2/health/live" 200' in server.stderr())
        assert server.stderr().count("Invalid HTTP request received") == 1, server.stderr()
    finally:
        server.stop()


def test_the_malformed_request_filter_counts_what_it_left_out():
    import logging

    from modelforge.serve.http_protocol import MalformedRequestLog

    f = MalformedRequestLog(every_s=3600)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, msg, (), None)

    assert f.filter(record(MalformedRequestLog.MESSAGE))
    assert not any(f.filter(record(MalformedRequestLog.MESSAGE)) for _ in range(3))
    assert f.filter(record("another warning"))  # other lines are never held back
    f.last -= 3600  # the next minute
    later = record(MalformedRequestLog.MESSAGE)
    assert f.filter(later) and "3 more since the last such line" in later.getMessage()


def _nested(depth: int) -> object:
    data: object = 1.0
    for _ in range(depth):
        data = [data]
    return data


@pytest.mark.parametrize(
    ("data", "shape", "words"),
    [
        (_nested(100), [1, 1], "nested 4+ levels deep, but its shape [1, 1] has 2"),
        ([[[1.0], [2.0, 3.0]]], [1, 3], "nested 3 levels deep, but its shape [1, 3] has 2"),
        ([[1, 2], [3]], [2, 2], "the same length at each level"),
    ],
)
def test_json_data_nested_unlike_its_shape_is_named_as_such(data, shape, words):
    from modelforge.serve.protocol import HttpError
    from modelforge.serve.tensors import from_json

    with pytest.raises(HttpError) as err:
        from_json("x", "FP32", data, shape)
    assert err.value.status == 400 and words in err.value.message, err.value.message
