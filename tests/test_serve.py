"""modelforge serve over HTTP and gRPC: one real server process for the whole module."""

from __future__ import annotations

import contextlib
import http.client
import json
import struct
import threading

import numpy as np
import onnxruntime as ort
import pytest

from modelforge.store.add import add_model
from modelforge.store.layout import Store
from modelforge.store.ops import tag
from tests import builders
from tests.model_zoo import expand_bomb, nan_output, zipmap_classifier
from tests.serve_support import (
    TYPES,
    bf16_model,
    fixed_model,
    save,
    start_server,
    types_model,
    wait_until,
)

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    store_root = root / "store"
    st = Store(store_root)
    for seed in (0, 1):
        p = save(builders.linear(4, 2, seed=seed), root / f"lin{seed}.onnx")
        add_model(p, "lin", store=st)
    tag("lin:1", "prod", store=st)
    files = {
        "add_two": save(builders.add_two(), root / "add_two.onnx"),
        "types": save(types_model(), root / "types.onnx"),
        "bf16": save(bf16_model(), root / "bf16.onnx"),
        "fixed": save(fixed_model(), root / "fixed.onnx"),
        "bomb": save(expand_bomb(), root / "bomb.onnx"),
        "zipmap": zipmap_classifier(root / "zipmap.onnx"),
        "nan": save(nan_output(), root / "nan.onnx"),
    }
    server = start_server(
        [
            "lin",
            *map(str, files.values()),
            "--grpc-port",
            "0",
            "--max-request-size",
            "1",
            "--poll-interval",
            "0.2",
            "--max-batch-size",
            "16",
            "--max-queue-delay",
            "500",  # contended batches wait up to 0.5 ms for more rows (the lifecycle tests: 0)
        ],
        env={"MODELFORGE_HOME": str(store_root)},
    )
    yield {"server": server, "store": st, "files": files, "root": root}
    assert server.stop() == 0, server.stderr()


@pytest.fixture
def srv(env):
    return env["server"]


def request(srv, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", srv.info["port"], timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def binary_request(srv, model, head: bytes, blob: bytes):
    """POST infer with a JSON header of ``len(head)`` bytes followed by binary tensors."""
    headers = {"Inference-Header-Content-Length": str(len(head))}
    return request(srv, "POST", f"/v2/models/{model}/infer", head + blob, headers)


def jreq(srv, method, path, obj=None, headers=None):
    body = None if obj is None else json.dumps(obj).encode()
    status, hdrs, data = request(srv, method, path, body, headers)
    return status, (json.loads(data) if data else None)


def ort_run(path, feeds, outputs=None):
    return ort.InferenceSession(str(path)).run(outputs, feeds)


def lin_path(env, version):
    return env["store"].version_dir("lin", version) / "files"


def lin_expected(env, version, x):
    files = list(lin_path(env, version).glob("*.onnx"))
    return ort_run(files[0], {"x": x})[0]


# -- health and metadata ----------------------------------------------------------------
def test_health_and_server_metadata(srv):
    assert srv.info["host"] == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")
    assert jreq(srv, "GET", "/v2/health/live") == (200, {"live": True})
    assert jreq(srv, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = jreq(srv, "GET", "/v2")
    assert status == 200 and meta["name"] == "modelforge"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])
    client = httpclient.InferenceServerClient(srv.hostport)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("lin") and client.is_model_ready("lin", "prod")


def test_model_metadata_datatypes_and_versions(srv):
    status, meta = jreq(srv, "GET", "/v2/models/lin")
    assert status == 200
    assert meta["versions"] == ["1", "2"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    status, types = jreq(srv, "GET", "/v2/models/types/versions/1")
    got = {t["name"]: t["datatype"] for t in types["inputs"]}
    assert got["in_f16"] == "FP16" and got["in_s"] == "BYTES" and got["in_b"] == "BOOL"
    assert got["in_u64"] == "UINT64" and got["in_f64"] == "FP64" and got["in_i8"] == "INT8"
    status, fixed = jreq(srv, "GET", "/v2/models/fixed")
    assert fixed["inputs"][0]["shape"] == [1, 4]


# -- inference over JSON ---------------------------------------------------------------
def test_json_without_content_type_nested_and_flat(env, srv):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for data in (x.tolist(), x.ravel().tolist()):
        body = {
            "id": "r-1",
            "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data}],
        }
        # http.client sends no Content-Type: JSON must still be taken as JSON
        status, out = jreq(env["server"], "POST", "/v2/models/lin/infer", body)
        assert status == 200, out
        assert out["id"] == "r-1" and out["model_name"] == "lin" and out["model_version"] == "2"
        y = np.array(out["outputs"][0]["data"], dtype=np.float32).reshape(
            out["outputs"][0]["shape"]
        )
        np.testing.assert_allclose(y, lin_expected(env, 2, x), rtol=1e-6)


def test_versions_and_aliases(env, srv):
    x = np.ones((1, 4), dtype=np.float32)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}]}
    for path, version in (
        ("/v2/models/lin/versions/1", 1),
        ("/v2/models/lin/versions/2", 2),
        ("/v2/models/lin/versions/prod", 1),
        ("/v2/models/lin", 2),
    ):
        status, out = jreq(srv, "POST", path + "/infer", body)
        assert status == 200 and out["model_version"] == str(version), (path, out)
        np.testing.assert_allclose(
            out["outputs"][0]["data"], lin_expected(env, version, x).ravel(), rtol=1e-6
        )
    status, out = jreq(srv, "POST", "/v2/models/lin/versions/9/infer", body)
    assert status == 404 and "no version 9" in out["error"]
    status, out = jreq(srv, "POST", "/v2/models/lin/versions/canary/infer", body)
    assert status == 404 and "canary" in out["error"] and "prod" in out["error"]
    status, out = jreq(srv, "POST", "/v2/models/nope/infer", body)
    assert status == 404 and "unknown model 'nope'" in out["error"]


def test_tritonclient_http_binary_default_and_json(env, srv):
    client = httpclient.InferenceServerClient(srv.hostport)
    a = np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32)
    b = np.random.default_rng(2).normal(size=(3, 3)).astype(np.float32)
    for binary in (True, False):
        ins = [
            httpclient.InferInput("a", [3, 3], "FP32"),
            httpclient.InferInput("b", [3, 3], "FP32"),
        ]
        ins[0].set_data_from_numpy(a, binary_data=binary)
        ins[1].set_data_from_numpy(b, binary_data=binary)
        res = client.infer("add_two", ins, request_id="t1")
        assert res.get_response()["id"] == "t1"
        np.testing.assert_allclose(res.as_numpy("sum"), a + b, rtol=1e-6)
        np.testing.assert_allclose(res.as_numpy("diff"), a - b, rtol=1e-6)
        # requested subset, as JSON then as binary
        outs = [httpclient.InferRequestedOutput("diff", binary_data=not binary)]
        res = client.infer("add_two", ins, outputs=outs)
        assert res.as_numpy("sum") is None
        np.testing.assert_allclose(res.as_numpy("diff"), a - b, rtol=1e-6)
        assert res.get_response().get("id", "") == ""


def _types_inputs(rows=2):
    rng = np.random.default_rng(3)
    values = {}
    for k in TYPES:
        if k == "s":
            values[k] = np.array([["a", "bé"], ["", "xyz"]][:rows], dtype=object)
        elif k == "b":
            values[k] = rng.integers(0, 2, size=(rows, 2)).astype(bool)
        else:
            dtype = {
                "f32": np.float32,
                "f64": np.float64,
                "f16": np.float16,
                "i8": np.int8,
                "i16": np.int16,
                "i32": np.int32,
                "i64": np.int64,
                "u8": np.uint8,
                "u16": np.uint16,
                "u32": np.uint32,
                "u64": np.uint64,
            }[k]
            values[k] = (rng.normal(size=(rows, 2)) * 50).astype(dtype)
    return values


def test_every_datatype_binary(srv):
    from tritonclient.utils import np_to_triton_dtype

    client = httpclient.InferenceServerClient(srv.hostport)
    values = _types_inputs()
    ins = []
    for k, v in values.items():
        inp = httpclient.InferInput(
            f"in_{k}", list(v.shape), np_to_triton_dtype(v.dtype) if k != "s" else "BYTES"
        )
        inp.set_data_from_numpy(v)
        ins.append(inp)
    res = client.infer("types", ins)
    for k, v in values.items():
        got = res.as_numpy(f"out_{k}")
        if k == "s":
            assert [x.decode() for x in got.ravel()] == list(v.ravel())
        else:
            assert got.dtype == v.dtype and np.array_equal(got, v), k


def test_every_datatype_json_and_fp16_refused(srv):
    values = _types_inputs()
    dt = {
        "f32": "FP32",
        "f64": "FP64",
        "f16": "FP16",
        "i8": "INT8",
        "i16": "INT16",
        "i32": "INT32",
        "i64": "INT64",
        "u8": "UINT8",
        "u16": "UINT16",
        "u32": "UINT32",
        "u64": "UINT64",
        "b": "BOOL",
        "s": "BYTES",
    }
    inputs = [
        {"name": f"in_{k}", "shape": [2, 2], "datatype": dt[k], "data": v.tolist()}
        for k, v in values.items()
    ]
    status, out = jreq(srv, "POST", "/v2/models/types/infer", {"inputs": inputs})
    assert status == 400 and "in_f16" in out["error"] and "FP16" in out["error"]
    assert "binary" in out["error"]
    # FP16 sent binary, everything else JSON; FP16 output asked binary, the rest JSON
    f16 = values["f16"].tobytes()
    inputs = [
        i
        if i["name"] != "in_f16"
        else {**i, "data": None, "parameters": {"binary_data_size": len(f16)}}
        for i in inputs
    ]
    for i in inputs:
        if i["data"] is None:
            del i["data"]
    outputs = [{"name": f"out_{k}", "parameters": {"binary_data": k == "f16"}} for k in dt]
    head = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    status, hdrs, body = binary_request(srv, "types", head, f16)
    assert status == 200, body
    hlen = int(hdrs["inference-header-content-length"])
    meta = json.loads(body[:hlen])
    for o in meta["outputs"]:
        k = o["name"][4:]
        if k == "f16":
            got = np.frombuffer(body[hlen:], dtype=np.float16).reshape(o["shape"])
            assert np.array_equal(got, values["f16"])
        elif k == "s":
            assert o["data"] == list(values["s"].ravel())
        else:
            got = np.array(o["data"], dtype=values[k].dtype).reshape(o["shape"])
            assert np.array_equal(got, values[k]), k


@pytest.mark.parametrize(
    ("key", "datatype", "data", "words"),
    [
        ("i64", "INT64", [[True, False], [1, 2]], ["in_i64", "true/false"]),
        ("i64", "INT64", [[True, False], [True, True]], ["in_i64", "non-integer"]),
        ("u8", "UINT8", [[1, 2], [3, 256]], ["in_u8", "outside the UINT8 range"]),
        ("f64", "FP64", [[1.5, 2], [3, True]], ["in_f64", "true/false"]),
        ("b", "BOOL", [[True, 0], [1, False]], ["in_b", "non-boolean"]),
    ],
)
def test_json_values_of_the_wrong_kind_are_refused(srv, key, datatype, data, words):
    """JSON carries no datatype per value: true/false inside numbers (numpy would read 1/0),
    numbers inside BOOL and out-of-range integers are refused, naming the input."""
    values = _types_inputs()
    kinds = {"i64": "INT64", "u8": "UINT8", "f64": "FP64", "b": "BOOL"}
    inputs = [
        {"name": f"in_{k}", "shape": [2, 2], "datatype": kinds[k], "data": v.tolist()}
        for k, v in values.items()
        if k in kinds and k != key
    ]
    inputs.append({"name": f"in_{key}", "shape": [2, 2], "datatype": datatype, "data": data})
    status, out = jreq(srv, "POST", "/v2/models/types/infer", {"inputs": inputs})
    assert status == 400, out
    for w in words:
        assert w in out["error"], (w, out["error"])


def test_bf16_in_binary_over_http_and_grpc(srv):
    """BF16 has no numpy dtype: its bit patterns travel raw, onnxruntime sees bfloat16."""
    ml_dtypes = pytest.importorskip("ml_dtypes")  # tritonclient's own BF16 type
    grpcclient = pytest.importorskip("tritonclient.grpc")
    status, meta = jreq(srv, "GET", "/v2/models/bf16")
    assert meta["inputs"] == [{"name": "x", "datatype": "BF16", "shape": [-1, 2]}]
    served = {m["name"]: m for m in srv.info["models"]}
    assert served["bf16"]["batching"] == [1]  # the probe ran on synthesized BF16 rows
    x = np.array([[1.5, -2.0], [3.25, 0.0], [1e30, -7.0]], dtype=ml_dtypes.bfloat16)
    for mod, url in ((httpclient, srv.hostport), (grpcclient, srv.grpc)):
        client = mod.InferenceServerClient(url)
        inp = mod.InferInput("x", [3, 2], "BF16")
        inp.set_data_from_numpy(x)
        res = client.infer("bf16", [inp])
        y = res.as_numpy("y")
        assert y.dtype == ml_dtypes.bfloat16 and np.array_equal(y, x), mod.__name__
        np.testing.assert_array_equal(res.as_numpy("z"), x.astype(np.float32))
    # JSON cannot carry BF16, either way
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BF16", "data": [1.0, 2.0]}]}
    status, out = jreq(srv, "POST", "/v2/models/bf16/infer", body)
    assert status == 400 and "'x'" in out["error"] and "binary" in out["error"]
    raw = x[:1].view(np.uint16).astype("<u2").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 2],
                    "datatype": "BF16",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
        }
    ).encode()
    status, _, data = binary_request(srv, "bf16", head, raw)
    assert status == 400 and "'y'" in json.loads(data)["error"], data


def test_zipmap_probabilities_as_tensor_with_labels(env, srv):
    client = httpclient.InferenceServerClient(srv.hostport)
    status, meta = jreq(srv, "GET", "/v2/models/zipmap")
    outs = {o["name"]: o for o in meta["outputs"]}
    assert outs["output_probability"]["datatype"] == "FP32"
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    inp = httpclient.InferInput("X", [5, 3], "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer("zipmap", [inp])
    probs = res.as_numpy("output_probability")
    want_labels, want_probs = ort_run(env["files"]["zipmap"], {"X": x})
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs, [[row[0], row[1]] for row in want_probs], rtol=1e-5)
    np.testing.assert_array_equal(res.as_numpy("output_label"), want_labels)
    out = [o for o in res.get_response()["outputs"] if o["name"] == "output_probability"][0]
    assert out["parameters"]["labels"] == [0, 1]


# -- errors --------------------------------------------------------------------------------
def _lin_body(**over):
    item = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    item.update(over)
    return {"inputs": [item]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_lin_body(datatype="FP64"), ["'x'", "FP64", "FP32"]),
        (_lin_body(shape=[4]), ["'x'", "rank 1", "rank 2"]),
        (_lin_body(shape=[2, 2]), ["dimension 1", "'x'", "expects 4"]),
        (_lin_body(shape=[2, 4]), ["'x'", "4 values", "needs 8"]),
        (_lin_body(name="z"), ["no input 'z'", "x"]),
        (_lin_body(datatype="FLOAT"), ["'FLOAT'", "not an OIP datatype"]),
        (_lin_body(data=["a", "b", "c", "d"]), ["'x'", "FP32"]),
        (_lin_body(data=[1, True, 2.5, 4]), ["'x'", "FP32", "true/false"]),
        (_lin_body(data=[[1, 2], [3, False]], shape=[1, 4]), ["'x'"]),
        (_lin_body(data=[1.5, None, 2, 3]), ["'x'", "not numbers"]),
        ({"inputs": []}, ["inputs"]),
        ({**_lin_body(), "id": {"a": 1}}, ["'id'", "string"]),
        ({**_lin_body(), "outputs": [{"name": "nope"}]}, ["no output 'nope'"]),
        ([1, 2], ["JSON object"]),
    ],
)
def test_bad_requests_are_400_naming_the_problem(srv, body, words):
    status, out = jreq(srv, "POST", "/v2/models/lin/infer", body)
    assert status == 400, out
    assert set(out) == {"error"}
    for w in words:
        assert w in out["error"], (w, out["error"])


def test_missing_input_and_malformed_json(srv):
    status, out = jreq(
        srv,
        "POST",
        "/v2/models/add_two/infer",
        {"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    )
    assert status == 400 and "lacks input 'b'" in out["error"]
    status, _, body = request(
        srv, "POST", "/v2/models/lin/infer", b'{"inputs": [', {"Content-Type": "application/json"}
    )
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]


def test_body_over_limit_refused_from_content_length(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.info["port"], timeout=10)
    conn.putrequest("POST", "/v2/models/lin/infer")
    conn.putheader("Content-Length", str(66 * 1024 * 1024))
    conn.endheaders()  # no body sent: the answer must come from the header alone
    resp = conn.getresponse()
    assert resp.status == 413 and "limit" in json.loads(resp.read())["error"]
    conn.close()
    # chunked, no Content-Length: counted while read, refused once past the limit
    import socket

    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 65536
        try:
            for _ in range(20):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server may close before we are done sending
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]


def test_json_nesting_is_bounded(srv):
    deep = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ' + (
        b"[" * 5000 + b"]" * 5000 + b"}]}"
    )
    status, _, body = request(srv, "POST", "/v2/models/lin/infer", deep)
    assert status == 400 and "error" in json.loads(body)


def test_non_finite_outputs(srv):
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 10]}]}
    status, _, raw = request(srv, "POST", "/v2/models/nan/infer", json.dumps(body).encode())
    assert status == 200 and b"NaN" in raw and b"-Infinity" in raw
    data = json.loads(raw)["outputs"][0]["data"]  # Python's json (and tritonclient) read them
    assert np.isnan(data[0]) and data[1] == float("-inf")
    client = httpclient.InferenceServerClient(srv.hostport)
    inp = httpclient.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(np.array([[1, 10]], dtype=np.float32))
    y = client.infer("nan", [inp]).as_numpy("y")
    assert np.isnan(y[0, 0]) and y[0, 1] == -np.inf


def test_content_encoding(env, srv):
    import gzip

    body = json.dumps(_lin_body()).encode()
    status, _, out = request(
        srv, "POST", "/v2/models/lin/infer", gzip.compress(body), {"Content-Encoding": "gzip"}
    )
    assert status == 200, out
    np.testing.assert_allclose(
        json.loads(out)["outputs"][0]["data"],
        lin_expected(env, 2, np.arange(1, 5, dtype=np.float32).reshape(1, 4)).ravel(),
        rtol=1e-6,
    )
    status, _, out = request(srv, "POST", "/v2/models/lin/infer", body, {"Content-Encoding": "br"})
    assert status == 415 and b"br" in out
    status, _, out = request(
        srv, "POST", "/v2/models/lin/infer", b"notgzip", {"Content-Encoding": "gzip"}
    )
    assert status == 400 and b"gzip" in out
    bomb = gzip.compress(b" " * (3 * 1024 * 1024))  # inflates past the 1 MiB limit
    status, _, out = request(
        srv, "POST", "/v2/models/lin/infer", bomb, {"Content-Encoding": "gzip"}
    )
    assert status == 413


def test_expect_100_continue_then_one_answer(srv):
    import socket

    body = json.dumps(_lin_body()).encode()
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = b""
        while b'"outputs"' not in reply:
            chunk = sock.recv(4096)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and b"content-length" in reply.lower()


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 7\r\n\r\n",
        b"BREW /v2 HTCPCP/1.0\r\n\r\n",
        b"POST /v2/models/lin/infer HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
)
def test_malformed_http_gets_a_json_400_and_the_server_lives(srv, head):
    import socket

    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=10) as sock:
        sock.sendall(head)
        reply = b""
        while chunk := sock.recv(4096):  # the server closes the connection after answering
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request", reply[:200]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    assert "malformed HTTP request" in json.loads(body)["error"]
    assert jreq(srv, "GET", "/v2/health/live")[0] == 200


def test_oversized_headers_are_431_before_they_fill_memory(srv):
    import socket

    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 64 MiB of one header value, unless the server stops us first
                sock.sendall(b"a" * (1 << 20))
        except OSError:
            pass  # refused and closed while we were still sending
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert "headers are over" in json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert jreq(srv, "GET", "/v2/health/live")[0] == 200


def test_head_answers_without_a_body_and_keeps_the_connection(srv):
    """HEAD (load balancers' probes): GET endpoints answer with headers only, others 405;
    the keep-alive connection stays usable after either."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.info["port"], timeout=10)
    try:
        for path, status in (
            ("/v2/health/ready", 200),
            ("/v2/models/lin/infer", 405),
            ("/v2/models/lin", 200),
        ):
            conn.request("HEAD", path)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (status, b""), path
        conn.request("GET", "/v2/health/live")
        assert json.loads(conn.getresponse().read()) == {"live": True}
    finally:
        conn.close()
    import socket

    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=10) as sock:
        sock.sendall(  # pipelined: both in one write, answered in order
            b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.count(b"HTTP/1.1 200 ") == 2, reply
    assert reply.endswith(b'{"live":true}'), reply


def test_paths_and_methods(srv):
    assert jreq(srv, "GET", "/v2/models/lin/infer")[0] == 405
    assert jreq(srv, "GET", "/nowhere")[0] == 404
    assert jreq(srv, "GET", "/v2/models/lin/bogus")[0] == 404


# -- binary edge cases ------------------------------------------------------------------
def _binary(srv, head, blob, hlen=None, path="/v2/models/lin/infer"):
    h = json.dumps(head).encode()
    return request(
        srv,
        "POST",
        path,
        h + blob,
        {"Inference-Header-Content-Length": str(len(h) if hlen is None else hlen)},
    )


def test_binary_edge_cases(srv):
    x = np.arange(4, dtype=np.float32).reshape(1, 4).tobytes()
    head = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
    status, _, body = _binary(srv, head, x[:10])  # truncated
    assert status == 400 and b"only 10 bytes" in body
    wrong = {"inputs": [{**head["inputs"][0], "parameters": {"binary_data_size": 12}}]}
    status, _, body = _binary(srv, wrong, x[:12])
    assert status == 400 and b"needs 16" in body
    status, _, body = _binary(srv, head, x + b"junk")
    assert status == 400 and b"4 bytes of binary data" in body
    status, _, body = _binary(srv, head, x, hlen=10_000)  # header longer than the body
    assert status == 400 and b"Inference-Header-Content-Length" in body
    status, _, body = _binary(srv, head, x, hlen="abc")
    assert status == 400
    status, hdrs, body = _binary(srv, {**head, "parameters": {"binary_data_output": True}}, x)
    assert status == 200
    hl = int(hdrs["inference-header-content-length"])
    assert json.loads(body[:hl])["outputs"][0]["parameters"]["binary_data_size"] == 8


def test_bytes_length_prefix_checked(srv):
    rows = [b"ab", b"c"] * 2
    good = b"".join(struct.pack("<I", len(v)) + v for v in rows)
    bad = struct.pack("<I", 99) + b"ab"
    for blob, ok in ((good[: len(good) // 2], True), (bad, False)):
        head = {
            "inputs": [
                {
                    "name": "in_s",
                    "shape": [1, 2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
        status, _, body = _binary(srv, head, blob, path="/v2/models/types/infer")
        # the other inputs are missing: a good BYTES blob gets past decoding to that error
        assert status == 400
        assert (b"lacks input" in body) == ok, body


def test_raw_single_input_body(env, srv):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    status, hdrs, body = request(
        srv, "POST", "/v2/models/lin/infer", x.tobytes(), {"Inference-Header-Content-Length": "0"}
    )
    assert status == 200, body
    hl = int(hdrs["inference-header-content-length"])
    meta = json.loads(body[:hl])
    y = np.frombuffer(body[hl:], dtype=np.float32).reshape(meta["outputs"][0]["shape"])
    np.testing.assert_allclose(y, lin_expected(env, 2, x), rtol=1e-6)
    status, _, body = request(
        srv,
        "POST",
        "/v2/models/add_two/infer",
        x.tobytes(),
        {"Inference-Header-Content-Length": "0"},
    )
    assert status == 400 and b"one input" in body
    status, _, body = request(
        srv, "POST", "/v2/models/lin/infer", b"123", {"Inference-Header-Content-Length": "0"}
    )
    assert status == 400 and b"multiple" in body


# -- Triton endpoints, repository, metrics ---------------------------------------------
def test_config_and_stats(srv):
    client = httpclient.InferenceServerClient(srv.hostport)
    cfg = client.get_model_config("lin")
    assert cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    fixed = client.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0 and fixed["input"][0]["dims"] == [1, 4]
    before = client.get_inference_statistics("fixed")["model_stats"]
    count = before[0]["inference_stats"]["success"]["count"] if before else 0
    x = np.ones((1, 4), dtype=np.float32)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("fixed", [inp]).as_numpy("y"), 2 * x)
    stats = client.get_inference_statistics("fixed", "1")["model_stats"][0]
    assert stats["version"] == "1"
    assert stats["inference_stats"]["success"]["count"] == count + 1
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
    assert stats["execution_count"] >= 1 and stats["inference_count"] >= 1


def test_repository_index_unload_load(srv):
    status, index = jreq(srv, "POST", "/v2/repository/index", {})
    names = {(e["name"], e["version"]) for e in index}
    assert ("lin", "1") in names and ("lin", "2") in names and ("fixed", "1") in names
    assert jreq(srv, "POST", "/v2/repository/models/fixed/unload")[0] == 200
    assert jreq(srv, "GET", "/v2/models/fixed/ready")[0] == 503
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}
    status, out = jreq(srv, "POST", "/v2/models/fixed/infer", body)
    assert status == 503 and "load" in out["error"]
    status, out = jreq(
        srv,
        "POST",
        "/v2/repository/models/fixed/load",
        {"parameters": {"file:1/model.onnx": "AAAA"}},
    )
    assert status == 403 and "refused" in out["error"]
    before = _samples(srv).get(
        'modelforge_inference_request_success_total{model="fixed",version="1"}', 0
    )
    assert jreq(srv, "POST", "/v2/repository/models/fixed/load")[0] == 200
    assert jreq(srv, "GET", "/v2/models/fixed/ready")[0] == 200
    assert jreq(srv, "POST", "/v2/models/fixed/infer", body)[0] == 200
    assert jreq(srv, "POST", "/v2/repository/models/nope/load")[0] == 404
    # reloaded: one series per version in /metrics, its counter going on (not a second one)
    _, _, text = request(srv, "GET", "/metrics")
    lines = [
        line
        for line in text.decode().splitlines()
        if line.startswith('modelforge_inference_request_success_total{model="fixed"')
    ]
    assert len(lines) == 1 and float(lines[0].rsplit(" ", 1)[1]) == before + 1, lines


def _samples(srv) -> dict[str, float]:
    status, hdrs, body = request(srv, "GET", "/metrics")
    assert status == 200 and "text/plain" in hdrs["content-type"]
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics(srv):
    lin = 'model="lin",version="2"'
    before = _samples(srv)
    assert jreq(srv, "POST", "/v2/models/lin/infer", _lin_body())[0] == 200
    bad = _lin_body()
    bad["inputs"][0]["datatype"] = "FP64"
    assert jreq(srv, "POST", "/v2/models/lin/infer", bad)[0] == 400
    after = _samples(srv)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(f"modelforge_inference_request_success_total{{{lin}}}") == 1
    failed = 'modelforge_inference_request_failure_total{model="lin",status="400",version="2"}'
    assert delta(failed) == 1
    assert delta(f"modelforge_request_duration_seconds_count{{{lin}}}") == 1
    assert delta(f'modelforge_request_duration_seconds_bucket{{le="+Inf",{lin}}}') == 1
    assert 0 < delta(f"modelforge_request_duration_seconds_sum{{{lin}}}") < 60
    assert delta(f"modelforge_inference_count_total{{{lin}}}") == 1  # one row of 4 values
    assert delta(f"modelforge_batch_size_sum{{{lin}}}") == 1
    assert delta(f"modelforge_inference_exec_count_total{{{lin}}}") == 1
    assert after[f"modelforge_requests_in_flight{{{lin}}}"] == 0
    # buckets are cumulative: never decreasing with le
    queue = "modelforge_queue_duration_seconds_bucket"
    buckets = [v for k, v in after.items() if k.startswith(queue) and lin in k]
    assert buckets == sorted(buckets) and buckets


# -- batching correctness under concurrency --------------------------------------------
def test_concurrent_clients_get_exactly_their_rows(srv):
    errors: list[str] = []
    rng = np.random.default_rng(7)
    jobs = []
    for i in range(48):
        rows = 40 if i % 7 == 0 else int(rng.integers(1, 6))  # 40 > --max-batch-size 16
        a = rng.normal(size=(rows, 3)).astype(np.float32)
        b = rng.normal(size=(rows, 3)).astype(np.float32)
        want = ["sum", "diff", None][i % 3]
        jobs.append((a, b, want))

    def worker(chunk):
        client = httpclient.InferenceServerClient(srv.hostport)
        for a, b, want in chunk:
            ins = [
                httpclient.InferInput("a", list(a.shape), "FP32"),
                httpclient.InferInput("b", list(b.shape), "FP32"),
            ]
            ins[0].set_data_from_numpy(a)
            ins[1].set_data_from_numpy(b)
            outs = None if want is None else [httpclient.InferRequestedOutput(want)]
            res = client.infer("add_two", ins, outputs=outs)
            for name, value in (("sum", a + b), ("diff", a - b)):
                got = res.as_numpy(name)
                if want is not None and name != want:
                    if got is not None:
                        errors.append(f"unrequested {name} returned")
                elif got is None or not np.allclose(got, value, rtol=1e-6):
                    errors.append(f"wrong {name} for a request of {a.shape[0]} rows")

    threads = [threading.Thread(target=worker, args=(jobs[i::12],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]


def test_alias_moves_under_load(env, srv):
    x = np.ones((1, 4), dtype=np.float32)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}
    expected = {v: lin_expected(env, v, x).ravel() for v in (1, 2)}
    stop = threading.Event()
    seen: list[tuple[int, str]] = []
    bad: list[str] = []

    def hammer():
        while not stop.is_set():
            status, out = jreq(srv, "POST", "/v2/models/lin/versions/prod/infer", body)
            if status != 200:
                bad.append(str(out))
                continue
            v = out["model_version"]
            seen.append((status, v))
            if not np.allclose(out["outputs"][0]["data"], expected[int(v)], rtol=1e-6):
                bad.append(f"version {v} answered with another version's output")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(seen) >= 5)
        tag("lin:2", "prod", store=env["store"])
        wait_until(lambda: seen[-1][1] == "2", timeout=20)
    finally:
        tag("lin:1", "prod", store=env["store"])
        stop.set()
        for t in threads:
            t.join(30)
    assert not bad, bad[:3]
    wait_until(
        lambda: (
            jreq(srv, "POST", "/v2/models/lin/versions/prod/infer", body)[1]["model_version"] == "1"
        )
    )


def test_memory_blowup_in_onnxruntime_is_503_and_server_lives(srv):
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
    status, out = jreq(srv, "POST", "/v2/models/bomb/infer", body)
    assert status in (400, 503) and "onnxruntime" in out["error"], out
    assert jreq(srv, "GET", "/v2/health/ready")[0] == 200
    assert jreq(srv, "POST", "/v2/models/lin/infer", _lin_body())[0] == 200


# -- gRPC ----------------------------------------------------------------------------------
def test_grpc_endpoints(env, srv):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(srv.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("lin") and client.is_model_ready("lin", "2")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    meta = client.get_model_metadata("lin")
    assert meta.inputs[0].datatype == "FP32" and list(meta.inputs[0].shape) == [-1, 4]
    x = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    inp = grpcclient.InferInput("x", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    for version, want in (("", 2), ("1", 1), ("prod", 1)):
        res = client.infer("lin", [inp], model_version=version, request_id="g1")
        assert res.get_response().model_version == str(want)
        assert res.get_response().id == "g1"
        np.testing.assert_allclose(res.as_numpy("y"), lin_expected(env, want, x), rtol=1e-6)
    bad = grpcclient.InferInput("x", [3, 4], "FP64")
    bad.set_data_from_numpy(x.astype(np.float64))
    with pytest.raises(InferenceServerException) as err:
        client.infer("lin", [bad])
    assert "FP64" in str(err.value) and "'x'" in str(err.value)
    assert "INVALID_ARGUMENT" in str(err.value.status())
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [inp])
    assert "NOT_FOUND" in str(err.value.status())
    cfg = client.get_model_config("lin", as_json=True)
    assert cfg["config"]["max_batch_size"] == 16
    stats = client.get_inference_statistics("lin", "1", as_json=True)
    assert int(stats["model_stats"][0]["inference_stats"]["success"]["count"]) >= 1


def test_grpc_stream_answers_in_order_and_survives_a_refused_request(env, srv):
    """ModelStreamInfer as tritonclient drives it: distinct inputs answered in order, with
    their ids; a wrong datatype is an error on the stream, which then goes on."""
    import queue

    grpcclient = pytest.importorskip("tritonclient.grpc")

    client = grpcclient.InferenceServerClient(srv.grpc)
    got: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    rng = np.random.default_rng(7)
    sent = []
    try:
        for k in range(6):
            x = rng.normal(size=(k + 1, 4)).astype(np.float32)
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            if k == 3:
                inp = grpcclient.InferInput("x", list(x.shape), "FP64")
                inp.set_data_from_numpy(x.astype(np.float64))
            else:
                inp.set_data_from_numpy(x)
            client.async_stream_infer("lin", [inp], request_id=f"s{k}", model_version="1")
            sent.append(x)
        answers = [got.get(timeout=30) for _ in sent]
    finally:
        client.stop_stream()
    for k, (result, error) in enumerate(answers):
        if k == 3:
            assert result is None and "FP64" in str(error) and "'x'" in str(error), error
            continue
        assert error is None, error
        assert result.get_response().id == f"s{k}"
        np.testing.assert_allclose(result.as_numpy("y"), lin_expected(env, 1, sent[k]), rtol=1e-6)


def test_grpc_open_streams_are_capped_and_unary_calls_still_get_threads(srv):
    """Each open stream holds a gRPC thread: past MAX_STREAMS a new stream is UNAVAILABLE
    (not a server whose every thread is held by idle streams)."""
    import threading

    grpc = pytest.importorskip("grpc")
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from modelforge.serve.grpc_stream import MAX_STREAMS

    request = service_pb2.ModelInferRequest(model_name="lin", id="held")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), dtype=np.float32).tobytes())
    release = threading.Event()

    def held():  # one request (answered: the stream is open on the server), then nothing
        yield request
        release.wait(60)

    with grpc.insecure_channel(srv.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        calls = []
        try:
            for _ in range(MAX_STREAMS):
                calls.append(stub.ModelStreamInfer(held()))
                assert next(calls[-1]).infer_response.id == "held"
            with pytest.raises(grpc.RpcError) as err:
                next(stub.ModelStreamInfer(iter([request])))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
            assert "streams are open already" in err.value.details()
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
        finally:
            release.set()
            for call in calls:
                call.cancel()
        # once they are closed, a stream opens again
        got = wait_until(lambda: _one_stream_answer(grpc, stub, request), timeout=20)
        assert got.infer_response.id == "held" and not got.error_message


def _one_stream_answer(grpc, stub, request):
    try:
        return next(stub.ModelStreamInfer(iter([request])), None)
    except grpc.RpcError:  # the cancelled streams have not all ended yet
        return None


def test_grpc_repository_index_load_and_unload(srv):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(srv.grpc)
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {m["version"] for m in index if m["name"] == "lin" and m.get("state") == "READY"} == {
        "1",
        "2",
    }, index
    with pytest.raises(InferenceServerException) as err:
        client.load_model("nope")
    assert "NOT_FOUND" in str(err.value.status())
    with pytest.raises(InferenceServerException) as err:
        client.load_model("lin", config='{"backend": "onnxruntime"}')
    assert "PERMISSION_DENIED" in str(err.value.status())
    client.unload_model("lin")
    try:
        assert not client.is_model_ready("lin")
        index = client.get_model_repository_index(as_json=True)["models"]
        states = {m["version"]: m.get("state") for m in index if m["name"] == "lin"}
        assert states and set(states.values()) == {"UNAVAILABLE"}, states
    finally:
        client.load_model("lin")
    assert client.is_model_ready("lin") and client.is_model_ready("lin", "1")


def test_grpc_every_datatype(srv):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import np_to_triton_dtype

    client = grpcclient.InferenceServerClient(srv.grpc)
    values = _types_inputs()
    ins = []
    for k, v in values.items():
        inp = grpcclient.InferInput(
            f"in_{k}", list(v.shape), "BYTES" if k == "s" else np_to_triton_dtype(v.dtype)
        )
        inp.set_data_from_numpy(v)
        ins.append(inp)
    res = client.infer("types", ins)
    for k, v in values.items():
        got = res.as_numpy(f"out_{k}")
        if k == "s":
            assert [x.decode() for x in got.ravel()] == list(v.ravel())
        else:
            assert np.array_equal(got, v), k
