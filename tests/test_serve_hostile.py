"""An outside tester's hostile requests against a real ``modelforge serve``: wrong-typed
fields, absurd shapes, odd version strings, early refusals, gRPC edge cases. Each case
must get a one-line JSON error (gRPC: a status and message) with the right status, and the
server keeps serving."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests import builders
from tests.builders import _model
from tests.serve_support import save, slow_model, start_server

grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
httpclient = pytest.importorskip("tritonclient.http")

HUGE = 2**62  # a dimension whose products overflow numpy's sizes


def anyrank_model():
    """x float32 of undeclared rank -> out = Identity(x)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "anyrank",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    return _model(graph)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    files = [
        save(builders.identity(shape=("N", 3)), root / "ident.onnx"),
        save(anyrank_model(), root / "anyrank.onnx"),
        save(builders.identity(TensorProto.STRING, shape=("N", 2)), root / "text.onnx"),
    ]
    server = start_server(
        [*map(str, files), "--threads", "1", "--grpc-port", "0", "--max-request-size", "1"],
        env={"MODELFORGE_HOME": str(root / "store")},
    )
    yield server
    assert server.stop() == 0, server.stderr()


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=30)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def stub(server):
    channel = grpc.insecure_channel(server.grpc)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_infer(server, model, tensors, raw, outputs=(), version=""):
    """(status code name, details, response) of one ModelInfer call."""
    pb = service_pb2
    req = pb.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=n, datatype=dt, shape=list(shape))
            for n, dt, shape in tensors
        ],
        raw_input_contents=raw,
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs],
    )
    channel, client = stub(server)
    try:
        return "OK", "", client.ModelInfer(req, timeout=30)
    except grpc.RpcError as err:
        return err.code().name, err.details(), None
    finally:
        channel.close()


def x_item(data, shape=(1, 3), **extra):
    return {"name": "x", "shape": list(shape), "datatype": "FP32", "data": data, **extra}


OK = {"inputs": [x_item([1, 2, 3])]}


def assert_still_serving(server):
    status, out = request(server, "POST", "/v2/models/ident/infer", OK)
    assert status == 200 and out["outputs"][0]["data"] == [1, 2, 3], out


def assert_error(status, out, want, *words):
    assert status == want and set(out) == {"error"}, (status, out)
    for word in words:
        assert word in out["error"], out


# -- a datatype that is not a string ----------------------------------------------------
@pytest.mark.parametrize("datatype", [["FP32"], {"t": "FP32"}, 32, None])
def test_a_datatype_that_is_not_a_string_is_400(srv, datatype):
    body = {"inputs": [x_item([1, 2, 3], datatype=datatype)]}
    status, out = request(srv, "POST", "/v2/models/ident/infer", body)
    assert_error(status, out, 400, "input 'x'", "not an OIP datatype")
    assert_still_serving(srv)


# -- zero-size shapes whose other dimensions overflow -----------------------------------
@pytest.mark.parametrize("model", ["ident", "anyrank"])
def test_zero_size_shape_with_huge_dimensions_is_400_in_json_and_binary(srv, model):
    shape = [0, HUGE, HUGE]
    status, out = request(srv, "POST", f"/v2/models/{model}/infer", {"inputs": [x_item([], shape)]})
    assert_error(status, out, 400, "input 'x'", "dimensions")
    tensor = {"name": "x", "shape": shape, "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": 0}
    head_bytes = json.dumps({"inputs": [tensor]}).encode()
    status, out = request(
        srv,
        "POST",
        f"/v2/models/{model}/infer",
        head_bytes,
        {"Inference-Header-Content-Length": str(len(head_bytes))},
    )
    assert_error(status, out, 400, "input 'x'", "dimensions")
    assert_still_serving(srv)


def test_grpc_refuses_huge_zero_size_shapes_and_ranks_over_32(srv):
    code, details, _ = grpc_infer(srv, "anyrank", [("x", "FP32", [0, HUGE, HUGE])], [b""])
    assert code == "INVALID_ARGUMENT" and "input 'x'" in details and "dimensions" in details
    one = np.ones(1, np.float32).tobytes()
    for rank in (33, 100):
        code, details, _ = grpc_infer(srv, "anyrank", [("x", "FP32", [1] * rank)], [one])
        assert code == "INVALID_ARGUMENT", (code, details)
        assert "input 'x'" in details and "at most 32" in details
    code, _, resp = grpc_infer(srv, "anyrank", [("x", "FP32", [1] * 32)], [one])
    assert code == "OK" and list(resp.outputs[0].shape) == [1] * 32


# -- version strings ----------------------------------------------------------------------
@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A1", "%EF%BC%91"])  # ², Arabic 1, fullwidth 1
@pytest.mark.parametrize("action", ["/infer", "", "/ready", "/stats", "/config"])
def test_versions_of_non_ascii_digits_are_404(srv, version, action):
    method, body = ("POST", OK) if action == "/infer" else ("GET", None)
    status, out = request(srv, method, f"/v2/models/ident/versions/{version}{action}", body)
    assert_error(status, out, 404, "model 'ident'", "no version or alias")


def test_grpc_versions_of_non_ascii_digits_are_not_found(srv):
    x = np.ones((1, 3), np.float32).tobytes()
    for version in ("²", "١"):
        code, details, _ = grpc_infer(srv, "ident", [("x", "FP32", [1, 3])], [x], version=version)
        assert code == "NOT_FOUND" and "no version or alias" in details, (code, details)


# -- gRPC duplicated requested outputs ---------------------------------------------------
def test_grpc_answers_a_duplicated_requested_output_once(srv):
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    code, _, resp = grpc_infer(
        srv, "ident", [("x", "FP32", [1, 3])], [x.tobytes()], outputs=["out", "out"]
    )
    assert code == "OK"
    assert [o.name for o in resp.outputs] == ["out"] and len(resp.raw_output_contents) == 1
    assert np.frombuffer(resp.raw_output_contents[0], np.float32).tolist() == [0, 1, 2]


# -- parameters of the wrong type ----------------------------------------------------------
@pytest.mark.parametrize("bad", [[], 0, "", False, "x", [1]])
@pytest.mark.parametrize("where", ["request", "input", "output"])
def test_parameters_that_are_not_objects_are_400(srv, where, bad):
    body: dict = {"inputs": [x_item([1, 2, 3])]}
    if where == "request":
        body["parameters"] = bad
    elif where == "input":
        body["inputs"][0]["parameters"] = bad
    else:
        body["outputs"] = [{"name": "out", "parameters": bad}]
    status, out = request(srv, "POST", "/v2/models/ident/infer", body)
    assert_error(status, out, 400, "'parameters'", "must be an object")


def test_repository_fields_of_the_wrong_type_are_400(srv):
    for body in ({"parameters": []}, {"parameters": 0}, {"parameters": ""}):
        status, out = request(srv, "POST", "/v2/repository/models/ident/load", body)
        assert_error(status, out, 400, "'parameters'", "must be an object")
    for ready in ("no", [1], 1):
        status, out = request(srv, "POST", "/v2/repository/index", {"ready": ready})
        assert_error(status, out, 400, "ready", "true or false")
    status, out = request(srv, "POST", "/v2/repository/index", {"ready": True})
    assert status == 200 and {e["name"] for e in out} == {"ident", "anyrank", "text"}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/v2/repository", "/v2/repository/foo", "/v2/repository/models/ident/drop"]
)
def test_unknown_repository_paths_are_404_whatever_the_method(srv, method, path):
    status, out = request(srv, method, path, b"" if method != "GET" else None)
    assert_error(status, out, 404, "no endpoint")


# -- Inference-Header-Content-Length ---------------------------------------------------------
@pytest.mark.parametrize("value", ["+5", "1_0", "0x10", "5.0", "-0"])  # " 5" is OWS: legal
def test_header_length_must_be_plain_decimal_digits(srv, value):
    status, out = request(
        srv,
        "POST",
        "/v2/models/ident/infer",
        json.dumps(OK).encode(),
        {"Inference-Header-Content-Length": value},
    )
    assert_error(status, out, 400, "Inference-Header-Content-Length", "non-negative integer")


# -- NaN / Infinity in a JSON request ----------------------------------------------------------
@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_json_tokens_get_an_error_that_says_how_to_send_them(srv, token):
    body = b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,%s,3]}]}' % token
    status, out = request(srv, "POST", "/v2/models/ident/infer", body)
    assert_error(status, out, 400, "not valid JSON", "NaN", "binary")
    x = np.array([[1, np.nan, np.inf]], np.float32)
    head = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                     "parameters": {"binary_data_size": 12}}]}
    ).encode()  # fmt: skip
    status, out = request(
        srv,
        "POST",
        "/v2/models/ident/infer",
        head + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(head))},
    )
    assert status == 200 and str(out["outputs"][0]["data"]) == "[1.0, nan, inf]", out


# -- an early 413 reaches a client that sends its whole body before reading ------------------
def test_a_413_reaches_a_client_that_sends_the_whole_body_first(srv):
    big = b"0" * (3 * 1024 * 1024)  # --max-request-size 1 (MB)
    for _ in range(3):
        status, out = request(srv, "POST", "/v2/models/ident/infer", big)
        assert_error(status, out, 413, "over the 1048576-byte limit")
    assert_still_serving(srv)


# -- connections that stall while a request is read ------------------------------------------
SHORT_KEEPALIVE = textwrap.dedent(
    """
    import socket, sys, uvicorn
    from modelforge import ServeOptions, create_app
    from modelforge.serve.server import _uvicorn_config

    options = ServeOptions(poll_interval_s=0, threads=1)
    config = _uvicorn_config(create_app([sys.argv[1]], options), options)
    config.timeout_keep_alive = 1  # the server's 30 s, shortened for the test
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn serves the socket
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    """
)


def test_connections_that_stall_inside_a_request_are_dropped(tmp_path):
    model = save(builders.identity(shape=("N", 3)), tmp_path / "ident.onnx")
    proc = subprocess.Popen(
        [sys.executable, "-c", SHORT_KEEPALIVE, str(model)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        body = json.dumps(OK).encode()
        stalls = {
            "nothing": b"",
            "crlf": b"\r\n\r\n",  # skipped by httptools: no request begins
            "head": b"GET /v2 HTTP/1.1\r\nHost: x\r\n",
            "body": b"POST /v2/models/ident/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n{"
            % len(body),
        }
        answers = {}
        for name, sent in stalls.items():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(sent)
                received = b""
                while chunk := sock.recv(65536):  # the server closes: recv returns b""
                    received += chunk
                answers[name] = received
        assert answers["nothing"] == b"", answers  # never began a request: just closed
        # closed after the keep-alive timeout (recv above would time out if it were held)
        assert answers["crlf"].startswith(b"HTTP/1.1 408 "), answers
        assert answers["head"].startswith(b"HTTP/1.1 408 "), answers
        assert answers["body"].startswith(b"HTTP/1.1 408 "), answers  # the app saw it leave
        assert b'{"error":"no byte of the request arrived for 1 s' in answers["head"]
        # a slow but steady client is not dropped: every byte restarts the clock
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            request = b"POST /v2/models/ident/infer HTTP/1.1\r\nContent-Length: %d\r\n"
            request += b"Connection: close\r\n\r\n%s"
            full = request % (len(body), body)
            for i in range(0, len(full), 30):  # ~2 s in all, a byte at least every 0.3 s
                sock.sendall(full[i : i + 30])
                time.sleep(0.3)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 "), received
    finally:
        proc.terminate()
        proc.wait(20)


# -- batching never mixes requests whose inputs have different row counts --------------------
def two_batch_dims_model(width: int = 512, depth: int = 48):
    """a [N, width] through ``depth`` MatMul + Tanh (slow: requests queue) -> y [N, width];
    b [M, 2] -> z = Identity(b) [M, 2]: two inputs with different first dimensions."""
    base = slow_model(width, depth)
    graph = base.graph
    graph.input[0].name = "a"
    graph.node[0].input[0] = "a"
    graph.input.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, ["M", 2]))
    graph.node.append(helper.make_node("Identity", ["b"], ["z"]))
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["M", 2]))
    return base


def test_requests_whose_inputs_differ_in_rows_are_never_merged(tmp_path):
    model = save(two_batch_dims_model(), tmp_path / "nm.onnx")
    # a batch holds 3 rows of 'a': (1 + 2) rows of 'a' come with (2 + 1) rows of 'b', so a
    # merged run would look row-aligned and hand one client's 'b' rows to the other
    server = start_server([str(model), "--threads", "1", "--max-batch-size", "3"])
    wrong: list[tuple] = []
    errors: list[str] = []

    def client(k: int) -> None:
        cl = httpclient.InferenceServerClient(server.hostport)
        na, nb = (1, 2) if k == 0 else (2, 1)
        for j in range(12):
            a = np.full((na, 512), 0.1, np.float32)
            b = np.full((nb, 2), k * 1000 + j, np.float32)
            inputs = [httpclient.InferInput("a", [na, 512], "FP32")]
            inputs.append(httpclient.InferInput("b", [nb, 2], "FP32"))
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            try:
                result = cl.infer("nm", inputs)
            except Exception as exc:  # a failed request fails the test too
                errors.append(str(exc)[:200])
                continue
            z, y = result.as_numpy("z"), result.as_numpy("y")
            if z.shape != b.shape or not (z == b).all() or y.shape != a.shape:
                wrong.append((k, j, z.tolist()))

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and not wrong, (errors[:3], wrong[:3])
    finally:
        assert server.stop() == 0, server.stderr()


def test_grpc_typed_contents_outside_the_datatype_range_are_invalid_argument(tmp_path):
    model = save(builders.identity(TensorProto.INT8, shape=("N", 2)), tmp_path / "small.onnx")
    server = start_server([str(model), "--threads", "1", "--grpc-port", "0"])
    pb = service_pb2
    channel, client = stub(server)
    try:
        for values, want in (([1000, 1], "INVALID_ARGUMENT"), ([-128, 127], "OK")):
            tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT8", shape=[1, 2])
            tensor.contents.int_contents.extend(values)
            try:
                resp = client.ModelInfer(
                    pb.ModelInferRequest(model_name="small", inputs=[tensor]), timeout=30
                )
            except grpc.RpcError as err:
                assert err.code().name == want, (values, err.code(), err.details())
                assert "input 'x'" in err.details() and "INT8 range" in err.details()
            else:
                assert want == "OK", values
                assert np.frombuffer(resp.raw_output_contents[0], np.int8).tolist() == values
    finally:
        channel.close()
        assert server.stop() == 0, server.stderr()


# -- a token no client could send ------------------------------------------------------------
@pytest.mark.parametrize("token", ["sécret", "tab\there", "nul\x01x"])
def test_a_token_no_header_can_carry_is_refused_at_start(tmp_path, token):
    model = save(builders.identity(shape=("N", 3)), tmp_path / "ident.onnx")
    env = dict(os.environ, MODELFORGE_SERVE_TOKEN=token, MODELFORGE_HOME=str(tmp_path / "s"))
    r = subprocess.run(
        [sys.executable, "-m", "modelforge", "serve", str(model), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "non-ASCII or control characters" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not r.stdout
