"""Second audit: hostile HTTP and unusual models against a real ``modelforge serve``.

Each bad request gets a one-line ``{"error"}`` with a 4xx status (never a 500), and the
server keeps serving; unusual but valid models (rank 0, fixed dim 0 > 1, an initializer-
backed input, symbolic output dims, several inputs sharing a batch dim) answer correctly."""

from __future__ import annotations

import gzip
import json
import select
import socket

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.builders import _model
from tests.serve_support import save, start_server

grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")

vi = helper.make_tensor_value_info
F = TensorProto.FLOAT


def _identity(name, shape_in, shape_out=None):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        name,
        [vi("x", F, shape_in)],
        [vi("y", F, shape_out if shape_out is not None else shape_in)],
    )
    return _model(graph)


def _two():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["oa"]), helper.make_node("Identity", ["b"], ["ob"])],
        "two",
        [vi("a", F, ["N", 2]), vi("b", F, ["N", 3])],
        [vi("oa", F, ["N", 2]), vi("ob", F, ["N", 3])],
    )
    return _model(graph)


def _optional():
    """y = x + bias, ``bias`` a graph input backed by an initializer (onnxruntime does not
    list it among the session's inputs)."""
    bias = numpy_helper.from_array(np.array([10, 20], np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "optional",
        [vi("x", F, ["N", 2]), vi("bias", F, [2])],
        [vi("y", F, ["N", 2])],
        initializer=[bias],
    )
    return _model(graph)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit2_hostile")
    models = {
        "ident": _identity("ident", ["N", 3]),
        "fixed3": _identity("fixed3", [3, 2]),
        "scalar": _identity("scalar", []),
        "symout": _identity("symout", ["N", "M"], ["N", "K"]),
        "two": _two(),
        "optional": _optional(),
    }
    files = [str(save(m, root / f"{name}.onnx")) for name, m in models.items()]
    server = start_server(
        [*files, "--threads", "1", "--grpc-port", "0", "--max-request-size", "1"],
        env={"MODELFORGE_HOME": str(root / "store")},
    )
    yield server
    assert server.stop() == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


def raw(server, data: bytes) -> tuple[int, dict, bytes]:
    """One request on its own connection: (status, lower-cased headers, body)."""
    with socket.create_connection(("127.0.0.1", server.info["port"]), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def post(server, path: str, body, headers: dict | None = None) -> tuple[int, dict]:
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode("latin-1")
    status, _, out = raw(
        server,
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s"
        % (path.encode(), len(body), extra, body),
    )
    return status, json.loads(out)


def get(server, path: bytes) -> tuple[int, dict]:
    status, _, out = raw(server, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
    return status, json.loads(out)


def tensor(name, shape, data, datatype="FP32"):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


ONE = {"inputs": [tensor("x", [1, 3], [1, 2, 3])]}


def assert_error(status, out, expected, words):
    assert status == expected, (status, out)
    assert list(out) == ["error"] and "\n" not in out["error"], out
    assert words in out["error"], out


# -- fixed defects ----------------------------------------------------------------------------
@pytest.mark.parametrize("digits", [4301, 5000, 20])
def test_a_version_of_thousands_of_digits_is_a_404_not_a_500(srv, digits):
    version = "9" * digits
    status, out = get(srv, f"/v2/models/ident/versions/{version}".encode())
    assert_error(status, out, 404, "model 'ident' has no version 999")
    status, out = post(srv, f"/v2/models/ident/versions/{version}/infer", ONE)
    assert_error(status, out, 404, "has no version 999")
    status, out = post(srv, "/v2/models/ident/versions/" + "0" * 5000 + "1/infer", ONE)
    assert status == 200 and out["model_version"] == "1", out  # leading zeros: version 1


def test_a_grpc_version_of_thousands_of_digits_is_not_found(srv):
    with grpc.insecure_channel(srv.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="ident", version="9" * 5000))
        assert ready.ready is False
        request = service_pb2.ModelInferRequest(model_name="ident", model_version="9" * 5000)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
    assert "has no version 999" in err.value.details()


def test_an_inference_header_length_of_thousands_of_digits_is_a_400(srv):
    head = json.dumps(
        {"inputs": [{**tensor("x", [1, 3], None), "parameters": {"binary_data_size": 12}}]}
    )
    head = head.replace(', "data": null', "").encode()
    body = head + np.ones(3, np.float32).tobytes()
    status, out = post(
        srv, "/v2/models/ident/infer", body, {"Inference-Header-Content-Length": "9" * 5000}
    )
    assert_error(status, out, 400, f"but the body has only {len(body)} bytes")
    padded = "0" * 5000 + str(len(head))  # leading zeros: still the header's length
    status, out = post(
        srv, "/v2/models/ident/infer", body, {"Inference-Header-Content-Length": padded}
    )
    assert status == 200 and out["outputs"][0]["data"] == [1.0, 1.0, 1.0], out


def test_a_chunked_body_over_the_limit_says_how_much_was_read(srv):
    chunk = b"0" * 65536
    data = b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        for _ in range(64):  # 4 MiB at most, against the 1 MiB limit
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.05)[0]:
                received += sock.recv(65536)
            if b"\r\n\r\n" in received:
                break
        while b"}" not in received and (more := sock.recv(65536)):
            received += more
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), received
    error = json.loads(body)["error"]
    assert "passed the limit after" in error and "1048576-byte limit" in error, error


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (gzip.compress(json.dumps(ONE).encode()) * 2, "has data after its end"),  # 2 members
        (gzip.compress(json.dumps(ONE).encode())[:-6], "truncated"),
        (gzip.compress(json.dumps(ONE).encode()) + b"junk", "has data after its end"),
    ],
    ids=["two-members", "truncated", "trailing-junk"],
)
def test_a_gzip_body_is_inflated_whole_or_refused(srv, body, what):
    status, out = post(srv, "/v2/models/ident/infer", body, {"Content-Encoding": "gzip"})
    assert_error(status, out, 400, what)
    ok = gzip.compress(json.dumps(ONE).encode())
    status, out = post(srv, "/v2/models/ident/infer", ok, {"Content-Encoding": "gzip"})
    assert status == 200, out


# -- unusual models, served right --------------------------------------------------------------
def test_a_rank_0_input(srv):
    for data in (5.0, [5.0]):
        status, out = post(srv, "/v2/models/scalar/infer", {"inputs": [tensor("x", [], data)]})
        assert (
            status == 200
            and out["outputs"][0]["shape"] == []
            and out["outputs"][0]["data"] == [5.0]
        )
    status, out = post(srv, "/v2/models/scalar/infer", {"inputs": [tensor("x", [1], [5.0])]})
    assert_error(status, out, 400, "(rank 0)")


def test_a_fixed_first_dimension_above_1(srv):
    status, out = post(srv, "/v2/models/fixed3/infer", {"inputs": [tensor("x", [3, 2], [1] * 6)]})
    assert status == 200 and out["outputs"][0]["shape"] == [3, 2], out
    status, out = post(srv, "/v2/models/fixed3/infer", {"inputs": [tensor("x", [6, 2], [1] * 12)]})
    assert_error(status, out, 400, "dimension 0 of input 'x' is 6; the model expects 3")
    status, config = get(srv, b"/v2/models/fixed3/config")
    assert status == 200 and config["max_batch_size"] == 0, config


def test_an_initializer_backed_input_takes_its_default_and_is_not_an_input(srv):
    status, meta = get(srv, b"/v2/models/optional")
    assert [i["name"] for i in meta["inputs"]] == ["x"], meta
    status, out = post(
        srv, "/v2/models/optional/infer", {"inputs": [tensor("x", [2, 2], [1, 2, 3, 4])]}
    )
    assert status == 200 and out["outputs"][0]["data"] == [11.0, 22.0, 13.0, 24.0], out
    body = {"inputs": [tensor("x", [1, 2], [1, 2]), tensor("bias", [2], [0, 0])]}
    status, out = post(srv, "/v2/models/optional/infer", body)
    assert_error(status, out, 400, "the model has no input 'bias' (inputs: x)")


def test_symbolic_output_dims_come_back_as_computed(srv):
    status, meta = get(srv, b"/v2/models/symout")
    assert meta["outputs"][0]["shape"] == [-1, -1], meta
    for shape in ([2, 5], [0, 0], [1, 1]):
        n = shape[0] * shape[1]
        body = {"inputs": [tensor("x", shape, list(range(n)))]}
        status, out = post(srv, "/v2/models/symout/infer", body)
        assert status == 200 and out["outputs"][0]["shape"] == shape, out
        assert out["outputs"][0]["data"] == [float(v) for v in range(n)], out


def test_inputs_whose_batch_dims_disagree(srv):
    body = {"inputs": [tensor("a", [2, 2], [1] * 4), tensor("b", [3, 3], [1] * 9)]}
    status, out = post(srv, "/v2/models/two/infer", body)
    assert_error(status, out, 400, "dimension 'N' is 2 in input 'a' but 3 in input 'b'")
    body = {"inputs": [tensor("a", [0, 2], []), tensor("b", [0, 3], [])]}
    status, out = post(srv, "/v2/models/two/infer", body)
    assert status == 200 and [o["shape"] for o in out["outputs"]] == [[0, 2], [0, 3]], out


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ([1e12, 3], "a list of non-negative integers"),
        ([10**12, 3], "has 3 values but shape [1000000000000, 3] needs 3000000000000"),
        ([-1, 3], "a list of non-negative integers"),
        ([2**63, 3], "multiply past"),
        ([2**70, 3], "a list of non-negative integers"),
    ],
)
def test_absurd_shapes_are_400s(srv, shape, words):
    status, out = post(srv, "/v2/models/ident/infer", {"inputs": [tensor("x", shape, [1, 2, 3])]})
    assert_error(status, out, 400, words)


def test_the_server_still_serves_after_all_that(srv):
    status, out = post(srv, "/v2/models/ident/infer", ONE)
    assert status == 200 and out["outputs"][0]["data"] == [1.0, 2.0, 3.0]


def test_a_post_without_a_body_says_so(srv):
    """HTTP/1.0 (or 1.1) without Content-Length or chunked has no body: the bytes after
    the head are not one, and the message says why the body is empty."""
    body = json.dumps(ONE).encode()
    for version in (b"1.0", b"1.1"):
        status, _, out = raw(
            srv,
            b"POST /v2/models/ident/infer HTTP/%s\r\nHost: x\r\nConnection: close\r\n\r\n%s"
            % (version, body),
        )
        assert_error(status, json.loads(out), 400, "the request has no body")


def test_a_transfer_coding_other_than_chunked_is_a_501(srv):
    body = json.dumps(ONE).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    status, headers, out = raw(srv, head + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked)
    assert_error(status, json.loads(out), 501, "Transfer-Encoding 'gzip, chunked' is not supported")
    assert headers["connection"] == "close"
    status, _, out = raw(srv, head + b"Transfer-Encoding: Chunked\r\n\r\n" + chunked)
    assert status == 200 and json.loads(out)["outputs"][0]["data"] == [1.0, 2.0, 3.0], out
