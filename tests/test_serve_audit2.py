"""Slow and idle clients against a real ``modelforge serve``: a request must arrive in full
within ``--read-timeout`` (408), and gRPC connections and streams that stay idle past
``--grpc-idle-timeout`` are let go. Bounded loops; no timing asserts (a generous upper bound
only keeps a broken server from hanging the test)."""

from __future__ import annotations

import json
import os
import queue
import select
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import builders
from tests.serve_support import save, start_server
from tests.test_serve_hostile import SHORT_KEEPALIVE  # the same short keep-alive server

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()
INFER = b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit2")
    model = save(builders.identity(shape=("N", 3)), root / "ident.onnx")
    server = start_server(
        [str(model), "--threads", "1", "--grpc-port", "0"]
        + ["--read-timeout", "1.5", "--grpc-idle-timeout", "2"],
        env={"MODELFORGE_HOME": str(root / "store")},
    )
    yield server
    assert server.stop() == 0, server.stderr()


def drip(server, data: bytes, every_s: float = 0.25) -> tuple[bytes, int]:
    """Send ``data`` a byte every ``every_s`` (well inside the 30 s idle timeout) until the
    server answers; returns (what came back, how many bytes were sent)."""
    with socket.create_connection(("127.0.0.1", server.info["port"]), timeout=30) as sock:
        sent = 0
        while sent < len(data) and not select.select([sock], [], [], every_s)[0]:
            sock.sendall(data[sent : sent + 1])
            sent += 1
        received = b""
        while chunk := sock.recv(65536):  # the server closes after its answer
            received += chunk
    return received, sent


def assert_408(received: bytes) -> dict:
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert b"connection: close" in head.lower(), received
    error = json.loads(body)
    assert list(error) == ["error"] and "did not arrive in full within 1.5 s" in error["error"]
    return error


def test_a_head_dripped_a_byte_at_a_time_is_answered_408(srv):
    # 200 bytes at 0.25 s would take 50 s: the server cuts it off long before the end
    head = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    received, sent = drip(srv, head)
    assert sent < len(head)
    assert_408(received)


def test_a_body_dripped_a_byte_at_a_time_is_answered_408(srv):
    big = json.dumps(
        {"inputs": [{"name": "x", "shape": [50, 3], "datatype": "FP32", "data": [0.5] * 150}]}
    ).encode()
    request = b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
        len(big)
    )
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=30) as sock:
        sock.sendall(request)  # the head at once: the clock started with its first byte
        received = b""
        for byte in big:
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                break
            sock.sendall(bytes([byte]))
        while chunk := sock.recv(65536):
            received += chunk
    assert_408(received)


def test_the_read_timeout_is_per_request_not_per_connection(srv):
    """Many quick requests on one keep-alive connection, for longer in all than the read
    timeout, are all answered."""
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=30) as sock:
        sock.settimeout(30)
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 3.5 and answered < 200:  # past 1.5 s, bounded
            sock.sendall(INFER)
            received = b""
            while b'"outputs"' not in received or not received.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 "), received
            answered += 1
            time.sleep(0.2)
    assert answered >= 2


def test_a_slow_client_does_not_stop_the_server(srv):
    drip(srv, b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 40)
    with socket.create_connection(("127.0.0.1", srv.info["port"]), timeout=30) as sock:
        sock.sendall(INFER.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received


def test_an_idle_grpc_stream_is_ended(srv):
    client = grpcclient.InferenceServerClient(srv.grpc)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        _, error = results.get(timeout=30)  # nothing sent: the server ends it after 2 s
    finally:
        client.stop_stream()
        client.close()
    assert error is not None
    assert "no request arrived on this stream for 2 s" in str(error), error


def test_a_busy_grpc_stream_is_not_ended(srv):
    client = grpcclient.InferenceServerClient(srv.grpc)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        x = np.ones((1, 3), np.float32)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 3.5 and sent < 100:  # past the 2 s idle bound
            inp = grpcclient.InferInput("x", [1, 3], "FP32")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("ident", [inp], request_id=str(sent))
            result, error = results.get(timeout=30)
            assert error is None, error
            assert result.get_response().id == str(sent)
            sent += 1
            time.sleep(0.5)
    finally:
        client.stop_stream()
        client.close()
    assert sent >= 2


def test_a_grpc_connection_without_calls_is_closed(srv):
    """max_connection_idle: after a call, a connection with no call for 2 s gets GOAWAY
    and the channel goes IDLE; the next call reconnects."""
    states: queue.Queue = queue.Queue()
    channel = grpc.insecure_channel(srv.grpc)
    try:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
        channel.subscribe(states.put, try_to_connect=False)
        seen = []
        deadline = time.monotonic() + 30
        while grpc.ChannelConnectivity.IDLE not in seen and time.monotonic() < deadline:
            try:
                seen.append(states.get(timeout=1))
            except queue.Empty:
                continue
        assert grpc.ChannelConnectivity.IDLE in seen, seen
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
    finally:
        channel.close()


def test_read_and_grpc_idle_timeouts_are_checked(tmp_path):
    from modelforge import ServeOptions
    from modelforge.errors import UsageError

    with pytest.raises(UsageError, match="--read-timeout must be more than 0"):
        ServeOptions(read_timeout_s=-1).validate()
    with pytest.raises(UsageError, match="--grpc-idle-timeout must be at least 1"):
        ServeOptions(grpc_idle_s=0.5).validate()
    assert ServeOptions(read_timeout_s=None, grpc_idle_s=None).validate().read_timeout_s is None


# -- a client that stops reading its answer --------------------------------------------------
BIG = 8 * 1024 * 1024  # FP32 values: a 32 MiB answer, far past the socket buffers


def expand_model(size: int = BIG):
    """x FP32 [N, 1] -> y = Expand(x, [1, size]): a big answer to a small request."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.builders import _model

    shape = numpy_helper.from_array(np.array([1, size], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"])],
        "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
        initializer=[shape],
    )
    return _model(graph)


def expand_server(tmp_path, size: int):
    model = save(expand_model(size), tmp_path / "expand.onnx")
    proc = subprocess.Popen(
        [sys.executable, "-c", SHORT_KEEPALIVE, str(model)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MODELFORGE_HOME=str(tmp_path / "store")),
    )
    return proc, int(proc.stdout.readline())


def ask_expand(port: int) -> socket.socket:
    """A connection with a tiny receive buffer that has asked for the big answer."""
    body = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [2.0]}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = b"POST /v2/models/expand/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
    request = request % len(body) + b"Connection: close\r\n\r\n" + body
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def test_a_client_that_stops_reading_its_answer_is_dropped(tmp_path):
    """The answer sits in the transport's buffer; once the client has read nothing of it for
    the keep-alive timeout, the connection is aborted (before: held, buffer and all, for as
    long as the client kept the socket open)."""
    proc, port = expand_server(tmp_path, BIG)
    try:
        with ask_expand(port) as sock:
            first = sock.recv(4096)  # the answer has begun: the server wrote it
            assert first.startswith(b"HTTP/1.1 200 "), first
            for _ in range(40):  # then stop reading: 4 s, the server's timeout is 1 s
                time.sleep(0.1)
            received = len(first)
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
        assert received < BIG * 4, received  # cut off, not delivered whole
        with socket.create_connection(("127.0.0.1", port), timeout=30) as other:
            other.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert other.recv(65536).startswith(b"HTTP/1.1 200 ")  # still serving
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_client_that_reads_its_answer_slowly_gets_all_of_it(tmp_path):
    size = 256 * 1024  # 1 MiB of FP32, read at ~160 KB/s: several keep-alive timeouts long
    proc, port = expand_server(tmp_path, size)
    try:
        with ask_expand(port) as sock:
            received = b""
            for _ in range(2000):  # bounded: 2000 x 32 KiB is far more than the answer
                burst = b""
                while len(burst) < 32768 and (chunk := sock.recv(32768 - len(burst))):
                    burst += chunk
                received += burst
                if len(burst) < 32768:  # the server closed: the answer is complete
                    break
                time.sleep(0.2)
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        header_length = int(head.lower().split(b"inference-header-content-length: ")[1].split()[0])
        blob = rest[header_length:]
        assert len(blob) == size * 4 and np.all(np.frombuffer(blob, np.float32) == 2.0)
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_name_pinned_by_an_alias_answers_to_that_alias(tmp_path):
    """``modelforge serve lin:prod`` serves version 1 only: ``versions/prod`` (what its
    clients were told to use) answers with it, as ``versions/1`` does (it was a 404)."""
    from modelforge.store.add import add_model
    from modelforge.store.layout import Store
    from modelforge.store.ops import tag

    store = Store(tmp_path / "store")
    for seed in (0, 1):
        add_model(
            save(builders.linear(4, 2, seed=seed), tmp_path / f"lin{seed}.onnx"), "lin", store=store
        )
    tag("lin:1", "prod", store=store)
    server = start_server(
        ["lin:prod", "--threads", "1"], env={"MODELFORGE_HOME": str(tmp_path / "store")}
    )
    try:
        (model,) = server.info["models"]
        assert model["versions"] == [1] and model["aliases"] == {"prod": 1}, model
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ).encode()
        answers = {}
        for version in ("prod", "1", "2"):
            with socket.create_connection(("127.0.0.1", server.info["port"]), timeout=30) as sock:
                sock.sendall(
                    b"POST /v2/models/lin/versions/%s/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (version.encode(), len(body), body)
                )
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
            answers[version] = received
        assert answers["prod"].startswith(b"HTTP/1.1 200 "), answers["prod"]
        assert b'"model_version":"1"' in answers["prod"]
        assert answers["prod"].split(b"\r\n\r\n")[1] == answers["1"].split(b"\r\n\r\n")[1]
        assert answers["2"].startswith(b"HTTP/1.1 404 "), answers["2"]
    finally:
        assert server.stop() == 0, server.stderr()


def test_a_grpc_connection_that_never_handshakes_is_closed(srv):
    """A TCP connection to the gRPC port that sends nothing is closed once the handshake
    timeout (here the 2 s idle timeout; gRPC's default is 120 s) has passed."""
    host, port = srv.grpc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        received = b""
        try:
            while chunk := sock.recv(65536):  # the server's HTTP/2 settings, then EOF
                received += chunk
        except ConnectionResetError:
            pass
    # recv returned: closed by the server (a held connection would time out above)
