"""Every call of the real clients (tritonclient http / http.aio / grpc / grpc.aio, raw HTTP as
Triton's C++ client and curl send it) against a real ``modelforge serve`` process.

What Triton does not implement here must be refused clearly (a status and a message naming
the extension), never ignored, never a 500, and the server must go on serving.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import socket
import ssl
import struct
import time
import zlib

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from modelforge.store.add import add_model
from modelforge.store.layout import Store
from modelforge.store.ops import tag
from tests import builders
from tests.serve_support import save, self_signed_cert, start_server

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
grpc = pytest.importorskip("grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "client-token"


def _typed_model():
    """f32 [N, 2], i64 [N, 2], s (string) [N, 2] -> Identity each: out_f32, out_i64, out_s."""
    kinds = {"f32": TensorProto.FLOAT, "i64": TensorProto.INT64, "s": TensorProto.STRING}
    graph = helper.make_graph(
        [helper.make_node("Identity", [k], [f"out_{k}"]) for k in kinds],
        "typed",
        [helper.make_tensor_value_info(k, t, ["N", 2]) for k, t in kinds.items()],
        [helper.make_tensor_value_info(f"out_{k}", t, ["N", 2]) for k, t in kinds.items()],
    )
    return builders._model(graph)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("clients")
    st = Store(root / "store")
    paths = []
    for seed in (0, 1):
        paths.append(save(builders.linear(4, 2, seed=seed), root / f"lin{seed}.onnx"))
        add_model(paths[-1], "lin", store=st)
    tag("lin:1", "prod", store=st)
    typed = save(_typed_model(), root / "typed.onnx")
    server = start_server(
        ["lin", str(typed), "--grpc-port", "0", "--poll-interval", "0"],
        env={"MODELFORGE_HOME": str(root / "store")},
    )
    yield {"server": server, "paths": paths}
    assert server.stop() == 0, server.stderr()
    assert server.proc.stdout.read() == ""  # the ready line was the only stdout
    assert "Traceback" not in server.stderr(), server.stderr()


@pytest.fixture
def srv(env):
    return env["server"]


def expected(env, version, x):
    sess = ort.InferenceSession(str(env["paths"][version - 1]))
    return sess.run(None, {"x": x})[0]


X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


def _hin(x=X, binary=True):
    i = httpclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return i


def _gin(x=X):
    i = grpcclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def _raw(srv, data: bytes, timeout=30) -> bytes:
    """Send raw bytes on one connection, read until the server closes it."""
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


# -- tritonclient.http ------------------------------------------------------------------
def test_http_health_metadata_and_repository(env, srv):
    c = httpclient.InferenceServerClient(srv.hostport)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("lin") and c.is_model_ready("lin", "1")
    assert c.is_model_ready("lin", "prod")
    assert not c.is_model_ready("lin", "9") and not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "modelforge" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("lin", "prod")
    assert m["versions"] == ["1", "2"] and m["inputs"][0]["shape"] == [-1, 4]
    with pytest.raises(InferenceServerException) as err:
        c.get_model_metadata("nope")
    assert err.value.status() == "404" and "nope" in err.value.message()
    cfg = c.get_model_config("lin", "1")
    assert cfg["max_batch_size"] > 0 and cfg["input"][0]["dims"] == [4]
    index = c.get_model_repository_index()
    assert {(m["name"], m["version"]) for m in index} >= {("lin", "1"), ("lin", "2")}
    c.unload_model("lin")
    assert not c.is_model_ready("lin")
    c.load_model("lin")
    assert c.is_model_ready("lin")
    for kw in ({"config": json.dumps({"max_batch_size": 2})},
               {"config": "{}", "files": {"file:1/model.onnx": b"\0"}}):  # fmt: skip
        with pytest.raises(InferenceServerException) as err:
            c.load_model("lin", **kw)
        assert err.value.status() == "403" and "store only" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        c.load_model("nope")
    assert err.value.status() == "404"
    c.unload_model("lin", unload_dependents=True)
    c.load_model("lin")


def test_http_infer_options_and_compression(env, srv):
    c = httpclient.InferenceServerClient(srv.hostport)
    want = expected(env, 2, X)
    json_out = [httpclient.InferRequestedOutput("y", binary_data=False)]
    calls = [
        {"request_id": "abc"},
        {"sequence_id": 7, "sequence_start": True, "sequence_end": True},
        {"sequence_id": "s-7", "sequence_start": True},
        {"priority": 3, "timeout": 10_000_000, "parameters": {"custom": 1}},
        {"headers": {"X-Trace": "1"}},
        {"outputs": json_out},
    ]
    for algo in ("gzip", "deflate"):
        calls.append({"request_compression_algorithm": algo})
        calls.append({"response_compression_algorithm": algo, "outputs": json_out})
    for kw in calls:
        r = c.infer("lin", [_hin(binary="outputs" not in kw)], **kw)
        np.testing.assert_allclose(r.as_numpy("y"), want, rtol=1e-6)
        assert r.get_response()["model_version"] == "2"
        assert r.get_response().get("id") == kw.get("request_id")
    r = c.infer("lin", [_hin()], model_version="prod")
    np.testing.assert_allclose(r.as_numpy("y"), expected(env, 1, X), rtol=1e-6)
    async_r = c.async_infer("lin", [_hin()], request_id="a1").get_result()
    assert async_r.get_response()["id"] == "a1"
    stats = c.get_inference_statistics("lin", "2")["model_stats"]
    assert [s["version"] for s in stats] == ["2"] and stats[0]["inference_count"] >= 2


def test_http_aio_client(env, srv):
    aio = pytest.importorskip("tritonclient.http.aio")

    async def main():
        c = aio.InferenceServerClient(srv.hostport)
        try:
            assert await c.is_server_live() and await c.is_model_ready("lin", "prod")
            assert (await c.get_model_metadata("lin", "1"))["name"] == "lin"
            assert (await c.get_model_config("lin"))["name"] == "lin"
            assert await c.get_model_repository_index()
            assert (await c.get_inference_statistics("lin"))["model_stats"]
            for algo in ("gzip", "deflate", None):
                r = await c.infer(
                    "lin",
                    [_hin()],
                    request_id="q",
                    request_compression_algorithm=algo,
                    response_compression_algorithm=algo,
                )
                np.testing.assert_allclose(r.as_numpy("y"), expected(env, 2, X), rtol=1e-6)
            with pytest.raises(InferenceServerException) as err:
                await c.load_model("lin", config="{}")
            assert err.value.status() == "403"
            with pytest.raises(InferenceServerException) as err:
                await c.get_log_settings()
            assert err.value.status() == "501"
        finally:
            await c.close()

    asyncio.run(main())


def test_classification_is_refused_not_ignored(srv):
    """Triton's ``classification`` output parameter (tritonclient ``class_count``) would turn
    the output into top-k "value:index" strings; answering the raw tensor instead would be a
    silently different answer."""
    h = httpclient.InferenceServerClient(srv.hostport)
    for binary in (True, False):
        out = httpclient.InferRequestedOutput("y", binary_data=binary, class_count=1)
        with pytest.raises(InferenceServerException) as err:
            h.infer("lin", [_hin()], outputs=[out])
        assert err.value.status() == "400"
        assert "output 'y'" in err.value.message() and "classification" in err.value.message()
    g = grpcclient.InferenceServerClient(srv.grpc)
    with pytest.raises(InferenceServerException) as err:
        g.infer("lin", [_gin()], outputs=[grpcclient.InferRequestedOutput("y", class_count=2)])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "classification" in err.value.message()
    assert h.infer("lin", [_hin()]).as_numpy("y").shape == (2, 2)  # still serving


def test_shared_memory_tensors_are_refused(srv):
    for mod, client in (
        (httpclient, httpclient.InferenceServerClient(srv.hostport)),
        (grpcclient, grpcclient.InferenceServerClient(srv.grpc)),
    ):
        inp = mod.InferInput("x", [1, 4], "FP32")
        inp.set_shared_memory("region", 16)
        with pytest.raises(InferenceServerException) as err:
            client.infer("lin", [inp])
        assert "input 'x' uses shared memory" in err.value.message()
        out = mod.InferRequestedOutput("y")
        out.set_shared_memory("region", 8)
        with pytest.raises(InferenceServerException) as err:
            client.infer("lin", [_hin(X[:1]) if mod is httpclient else _gin(X[:1])], outputs=[out])
        assert err.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
        assert "output 'y' uses shared memory" in err.value.message()


TRITON_ONLY_CALLS = [
    ("logging", lambda c: c.get_log_settings()),
    ("logging", lambda c: c.update_log_settings({"log_verbose_level": 1})),
    ("trace", lambda c: c.get_trace_settings()),
    ("trace", lambda c: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})),
    ("system shared-memory", lambda c: c.get_system_shared_memory_status()),
    ("system shared-memory", lambda c: c.register_system_shared_memory("r", "/k", 64)),
    ("system shared-memory", lambda c: c.unregister_system_shared_memory()),
    ("CUDA shared-memory", lambda c: c.get_cuda_shared_memory_status()),
    ("CUDA shared-memory", lambda c: c.register_cuda_shared_memory("r", b"\0" * 64, 0, 64)),
    ("CUDA shared-memory", lambda c: c.unregister_cuda_shared_memory()),
]


def test_triton_only_extensions_are_501_naming_them(srv):
    h = httpclient.InferenceServerClient(srv.hostport)
    g = grpcclient.InferenceServerClient(srv.grpc)
    for extension, call in TRITON_ONLY_CALLS:
        for client, status in ((h, "501"), (g, "StatusCode.UNIMPLEMENTED")):
            with pytest.raises(InferenceServerException) as err:
                call(client)
            assert err.value.status() == status, (extension, err.value)
            assert f"Triton's {extension} extension" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        h.get_trace_settings(model_name="lin")
    assert err.value.status() == "501"
    for path in ("/v2/models/lin/generate", "/v2/models/lin/versions/1/generate_stream"):
        head = _raw(srv, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                         "Connection: close\r\n\r\n{}".encode())  # fmt: skip
        assert head.startswith(b"HTTP/1.1 501 ") and b"generate extension" in head
    assert g.infer("lin", [_gin()]).as_numpy("y").shape == (2, 2)  # still serving
    assert h.is_server_ready()


# -- tritonclient.grpc ------------------------------------------------------------------
def test_grpc_client_surface(env, srv):
    keepalive = grpcclient.KeepAliveOptions(
        keepalive_time_ms=10_000, keepalive_timeout_ms=5_000, keepalive_permit_without_calls=True
    )
    c = grpcclient.InferenceServerClient(srv.grpc, keepalive_options=keepalive)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("lin", "prod")
    assert not c.is_model_ready("nope")
    assert c.get_server_metadata(as_json=True)["name"] == "modelforge"
    assert c.get_model_metadata("lin", as_json=True)["versions"] == ["1", "2"]
    assert c.get_model_config("lin", "1", as_json=True)["config"]["name"] == "lin"
    assert len(c.get_model_repository_index(as_json=True)["models"]) >= 2
    c.unload_model("lin")
    assert not c.is_model_ready("lin")
    c.load_model("lin")
    for kw in ({"config": "{}"}, {"config": "{}", "files": {"file:1/m.onnx": b"x"}}):
        with pytest.raises(InferenceServerException) as err:
            c.load_model("lin", **kw)
        assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    want = expected(env, 2, X)
    for kw in (
        {"request_id": "g1"},
        {"compression_algorithm": "gzip"},
        {"compression_algorithm": "deflate"},
        {"client_timeout": 30},
        {"sequence_id": 3, "sequence_start": True, "sequence_end": True, "priority": 1},
        {"timeout": 5000, "parameters": {"k": "v"}, "headers": {"x-a": "b"}},
    ):
        r = c.infer("lin", [_gin()], **kw)
        np.testing.assert_allclose(r.as_numpy("y"), want, rtol=1e-6)
        assert r.get_response().id == kw.get("request_id", "")
    assert c.infer("lin", [_gin()], model_version="prod").get_response().model_version == "1"
    got: queue.Queue = queue.Queue()
    c.async_infer("lin", [_gin()], callback=lambda result, error: got.put((result, error)))
    result, error = got.get(timeout=30)
    assert error is None and result.as_numpy("y").shape == (2, 2)
    stats = c.get_inference_statistics("lin", "2", as_json=True)["model_stats"]
    assert stats[0]["version"] == "2" and int(stats[0]["inference_count"]) > 0


def test_grpc_stream_goes_on_after_a_refused_request(srv):
    c = grpcclient.InferenceServerClient(srv.grpc)
    got: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        c.async_stream_infer("lin", [_gin()], request_id="s0")
        c.async_stream_infer("nope", [_gin()], request_id="bad")
        c.async_stream_infer("lin", [_gin()], request_id="s1")
        answers = [got.get(timeout=30) for _ in range(3)]
    finally:
        c.stop_stream()
    assert answers[0][0].get_response().id == "s0" and answers[0][1] is None
    assert answers[1][0] is None and "unknown model 'nope'" in str(answers[1][1])
    assert answers[2][0].get_response().id == "s1"


def test_grpc_aio_client(env, srv):
    aio = pytest.importorskip("tritonclient.grpc.aio")

    async def main():
        c = aio.InferenceServerClient(srv.grpc)
        try:
            assert await c.is_server_ready()
            assert (await c.get_model_metadata("lin", as_json=True))["name"] == "lin"
            r = await c.infer("lin", [_gin()], request_id="ga", compression_algorithm="gzip")
            np.testing.assert_allclose(r.as_numpy("y"), expected(env, 2, X), rtol=1e-6)

            async def requests():
                for k in range(3):
                    yield {"model_name": "lin", "inputs": [_gin()], "request_id": f"a{k}"}

            ids = [res.get_response().id async for res, err in c.stream_infer(requests())]
            assert ids == ["a0", "a1", "a2"]
        finally:
            await c.close()

    asyncio.run(main())


def test_grpc_typed_contents_and_bytes(srv):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    def request(f32_field="fp32_contents", raw=False):
        req = service_pb2.ModelInferRequest(model_name="typed", id="t")
        f = req.inputs.add(name="f32", datatype="FP32", shape=[2, 2])
        getattr(f.contents, f32_field).extend([1, 2, 3, 4])
        req.inputs.add(name="i64", datatype="INT64", shape=[2, 2]).contents.int64_contents.extend(
            [2**40, -1, 0, 7]
        )
        s = req.inputs.add(name="s", datatype="BYTES", shape=[2, 2])
        s.contents.bytes_contents.extend([b"a", b"", "é".encode(), b"xyz"])
        if raw:
            req.raw_input_contents.extend([b"\0" * 16, b"\0" * 32, b"\0" * 4])
        return req

    with grpc.insecure_channel(srv.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        resp = stub.ModelInfer(request())
        outs = dict(zip([o.name for o in resp.outputs], resp.raw_output_contents, strict=True))
        assert np.frombuffer(outs["out_f32"], "<f4").tolist() == [1, 2, 3, 4]
        assert np.frombuffer(outs["out_i64"], "<i8").tolist() == [2**40, -1, 0, 7]
        blob, items = outs["out_s"], []
        while blob:
            (n,) = struct.unpack_from("<I", blob)
            items.append(blob[4 : 4 + n].decode())
            blob = blob[4 + n :]
        assert items == ["a", "", "é", "xyz"]
        for bad, words in (
            (request("int64_contents"), "its values go in contents.fp32_contents"),
            (request(raw=True), "typed contents although the request uses raw_input_contents"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details()
    # BYTES through tritonclient (raw, length-prefixed) both ways
    c = grpcclient.InferenceServerClient(srv.grpc)
    ins = []
    for name, dt, arr in (
        ("f32", "FP32", np.ones((1, 2), np.float32)),
        ("i64", "INT64", np.ones((1, 2), np.int64)),
        ("s", "BYTES", np.array([[b"p", "é".encode()]], dtype=object)),
    ):
        i = grpcclient.InferInput(name, [1, 2], dt)
        i.set_data_from_numpy(arr)
        ins.append(i)
    assert c.infer("typed", ins).as_numpy("out_s").tolist() == [[b"p", "é".encode()]]


# -- what Triton's C++ client (perf_analyzer) and curl send ----------------------------------
def test_cpp_client_json_request_with_header_length_and_empty_id(env, srv):
    """Triton's C++ HTTP client (perf_analyzer) always sends Inference-Header-Content-Length
    (the whole body when every input is JSON), ``Expect:`` empty, ``"id": ""``."""
    body = json.dumps(
        {
            "id": "",
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
        }
    ).encode()
    head = (
        f"POST /v2/models/lin/versions/1/infer HTTP/1.1\r\nHost: x\r\nExpect:\r\n"
        f"Content-Type: application/json\r\nInference-Header-Content-Length: {len(body)}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = _raw(srv, head + body)
    assert answer.startswith(b"HTTP/1.1 200 ")
    doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert doc["id"] == "" and doc["model_version"] == "1"
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(2, 2),
                               expected(env, 1, X), rtol=1e-6)  # fmt: skip
    # its binary form, gzip-compressed as --request-compression would
    jhead = json.dumps(
        {"id": "7", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                "parameters": {"binary_data_size": 32}}],
         "parameters": {"binary_data_output": True}}
    ).encode()  # fmt: skip
    packed = zlib.compress(jhead + X.tobytes())
    req = (
        f"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nExpect:\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Encoding: deflate\r\n"
        f"Inference-Header-Content-Length: {len(jhead)}\r\nContent-Length: {len(packed)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode()
    answer = _raw(srv, req + packed)
    headers, _, payload = answer.partition(b"\r\n\r\n")
    hlen = int(headers.lower().split(b"inference-header-content-length: ")[1].split(b"\r\n")[0])
    assert json.loads(payload[:hlen])["id"] == "7"
    got = np.frombuffer(payload[hlen:], np.float32).reshape(2, 2)
    np.testing.assert_allclose(got, expected(env, 2, X), rtol=1e-6)


def test_http_wire_behaviour_curl_and_proxies_rely_on(srv):
    body = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"id":"%d"}'
    one = lambda i: (  # noqa: E731
        b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body % i), body % i)
    )
    # pipelined: every answer, in order, on one connection
    tail = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head = b"HEAD /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
    out = _raw(srv, b"".join(one(i) for i in range(4)) + head + tail)
    assert out.count(b"HTTP/1.1 200 OK") == 6
    assert [out.index(b'"id":"%d"' % i) for i in range(4)] == sorted(
        out.index(b'"id":"%d"' % i) for i in range(4)
    )
    assert out.rstrip().endswith(b'{"live":true}')
    # HTTP/1.0: answered, then closed
    out = _raw(srv, b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
    assert b" 200 " in out.split(b"\r\n")[0] and out.endswith(b'{"ready":true}')
    # chunked upload, and Expect: 100-continue before a > 1 MB body
    rows = 70_000
    tensor = {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [0.5] * (rows * 4)}
    wanted = [{"name": "y", "parameters": {"binary_data": True}}]
    big = json.dumps({"inputs": [tensor], "outputs": wanted}).encode()
    assert len(big) > 1 << 20
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i : i + 65536]), big[i : i + 65536])
                      for i in range(0, len(big), 65536)) + b"0\r\n\r\n"  # fmt: skip
    out = _raw(srv, b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                    b"chunked\r\nConnection: close\r\n\r\n" + chunks)  # fmt: skip
    assert out.startswith(b"HTTP/1.1 200 ") and len(out) > rows * 8
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=30) as s:
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(big))  # fmt: skip
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(big)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert b"HTTP/1.1 200 OK" in out and len(out) > rows * 8
    # OPTIONS (and a CORS preflight): 405, Allow names what is allowed
    out = _raw(srv, b"OPTIONS /v2/models/lin HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n"
                    b"Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert out.startswith(b"HTTP/1.1 405 ") and b"\r\nallow: GET, HEAD\r\n" in out


# -- token and TLS, every client's way of passing them --------------------------------------
@pytest.fixture(scope="module")
def secure(env, tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    root = tmp_path_factory.mktemp("clients-tls")
    cert, key = self_signed_cert(root)
    model = save(builders.linear(4, 2), root / "lin.onnx")
    server = start_server(
        [str(model), "--grpc-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)],
        env={
            "MODELFORGE_SERVE_TOKEN": TOKEN,
            "MODELFORGE_HOME": str(root / "store"),
            "GRPC_VERBOSITY": "",
        },  # fmt: skip
    )
    yield server, cert
    assert server.stop() == 0, server.stderr()


def test_token_and_tls_with_every_client(secure):
    server, cert = secure
    auth = {"Authorization": f"Bearer {TOKEN}"}
    h = httpclient.InferenceServerClient(
        server.hostport, ssl=True, ssl_options={"ca_certs": str(cert)}
    )
    assert h.is_server_live()  # health needs no token
    assert not h.is_model_ready("lin")  # 401 reads as not ready
    with pytest.raises(InferenceServerException) as err:
        h.get_server_metadata()
    assert err.value.status() == "401"
    assert h.infer("lin", [_hin()], headers=auth).as_numpy("y").shape == (2, 2)
    assert h.is_model_ready("lin", headers=auth)

    async def http_aio():
        import tritonclient.http.aio as aio

        c = aio.InferenceServerClient(
            server.hostport, ssl=True, ssl_context=ssl.create_default_context(cafile=str(cert))
        )
        try:
            r = await c.infer("lin", [_hin()], headers=auth)
            assert r.as_numpy("y").shape == (2, 2)
        finally:
            await c.close()

    asyncio.run(http_aio())
    # gRPC metadata keys are lowercase (grpcio refuses "Authorization" on the client side)
    gauth = {"authorization": f"Bearer {TOKEN}"}
    g = grpcclient.InferenceServerClient(server.grpc, ssl=True, root_certificates=str(cert))
    assert g.is_server_live()
    with pytest.raises(InferenceServerException) as err:
        g.infer("lin", [_gin()])
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    assert g.infer("lin", [_gin()], headers=gauth).as_numpy("y").shape == (2, 2)
    got: queue.Queue = queue.Queue()
    g.start_stream(callback=lambda result, error: got.put((result, error)), headers=gauth)
    try:
        g.async_stream_infer("lin", [_gin()], request_id="t1")
        result, error = got.get(timeout=30)
    finally:
        g.stop_stream()
    assert error is None and result.get_response().id == "t1"
    # a plaintext client knocking on the TLS gRPC port: refused, and nothing on stderr
    before = len(server.stderr_lines)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", int(server.grpc.split(":")[1]))) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            while s.recv(4096):
                pass
    assert g.is_server_ready()
    time.sleep(0.5)  # let the stderr pump catch up before looking for what must not be there
    assert server.stderr_lines[before:] == []
    # SIGTERM with tritonclient.http's idle TLS keep-alive connection still open: it is
    # closed at once, not waited for until the grace period runs out
    assert h.is_server_ready()
    assert server.stop() == 0
    assert "graceful shutdown exceeded" not in server.stderr(), server.stderr()
