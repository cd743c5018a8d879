"""Bearer token, TLS, whole-store mode, request timeout; CLI errors before any server."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import sys
import threading

import numpy as np
import pytest

from modelforge.store.add import add_model
from modelforge.store.layout import Store
from tests import builders
from tests.serve_support import save, self_signed_cert, slow_model, start_server, wait_until

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    root = tmp_path_factory.mktemp("secure")
    cert, key = self_signed_cert(root)
    st = Store(root / "store")
    add_model(save(builders.linear(4, 1), root / "lin.onnx"), "lin", store=st)
    add_model(save(slow_model(), root / "slow.onnx"), "slow", store=st)
    server = start_server(
        [
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--inline-below",
            "0",
            "--grpc-port",
            "0",
            "--request-timeout",
            "0.3",
            "--instances",
            "2",
            "--threads",
            "1",
            "--poll-interval",
            "0.2",
        ],
        env={"MODELFORGE_HOME": str(root / "store"), "MODELFORGE_SERVE_TOKEN": TOKEN},
    )
    yield {"server": server, "cert": cert, "store": st, "root": root}
    assert server.stop() == 0, server.stderr()


def call(env, method, path, body=None, token=TOKEN, headers=None):
    ctx = ssl.create_default_context(cafile=str(env["cert"]))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", env["server"].info["port"], context=ctx, timeout=30
    )
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("content-type", "")
        value = json.loads(data) if data and "json" in ctype else data
        return resp.status, dict(resp.getheaders()), value
    finally:
        conn.close()


def test_tls_and_token_everywhere_but_health(secure):
    assert secure["server"].url.startswith("https://")
    assert call(secure, "GET", "/v2/health/live", token=None)[0] == 200
    assert call(secure, "GET", "/v2/health/ready", token=None)[0] == 200
    for path in ("/v2", "/v2/models/lin", "/metrics", "/v2/models/lin/config"):
        status, headers, body = call(secure, "GET", path, token=None)
        assert status == 401 and headers.get("www-authenticate") == "Bearer", path
        assert call(secure, "GET", path, token="wrong")[0] == 401
        assert call(secure, "GET", path)[0] == 200, path
    status, _, _ = call(secure, "POST", "/v2/repository/index", b"{}", token=None)
    assert status == 401
    # plain HTTP on the TLS port gets no answer
    conn = http.client.HTTPConnection("127.0.0.1", secure["server"].info["port"], timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request("GET", "/v2/health/live")
        conn.getresponse().read()


def test_grpc_over_tls_needs_the_token(secure):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(
        secure["server"].grpc, ssl=True, root_certificates=str(secure["cert"])
    )
    assert client.is_server_live()  # health needs no token
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("lin")
    assert "UNAUTHENTICATED" in str(err.value.status())
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert client.get_model_metadata("lin", headers=auth).name == "lin"
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    assert client.infer("lin", [inp], headers=auth).as_numpy("y").shape == (1, 1)


@pytest.mark.parametrize("first_good", [True, False])
def test_two_authorization_headers_are_refused_over_http_and_grpc(secure, first_good):
    """A proxy and the server could each read a different one of two: neither counts."""
    good, junk = f"Bearer {TOKEN}", "Bearer wrong"
    pair = [good, junk] if first_good else [junk, good]
    ctx = ssl.create_default_context(cafile=str(secure["cert"]))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", secure["server"].info["port"], context=ctx, timeout=30
    )
    try:
        conn.putrequest("GET", "/v2/models/lin")
        for value in pair:
            conn.putheader("Authorization", value)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 401
    finally:
        conn.close()
    grpc = pytest.importorskip("grpc")
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    creds = grpc.ssl_channel_credentials(secure["cert"].read_bytes())
    with grpc.secure_channel(secure["server"].grpc, creds) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelMetadataRequest(name="lin")
        assert stub.ModelMetadata(request, metadata=[("authorization", good)]).name == "lin"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelMetadata(request, metadata=[("authorization", v) for v in pair])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_whole_store_served_and_new_names_appear(secure):
    names = {m["name"] for m in secure["server"].info["models"]}
    assert names == {"lin", "slow"}
    assert call(secure, "GET", "/v2/models/lin2")[0] == 404
    add_model(
        save(builders.linear(4, 3), secure["root"] / "lin2.onnx"), "lin2", store=secure["store"]
    )
    status, _, meta = wait_until(
        lambda: (r := call(secure, "GET", "/v2/models/lin2"))[0] == 200 and r, timeout=30
    )
    assert meta["outputs"][0]["shape"] == [-1, 3]
    # a removed version stops being served (404) once the poller sees it
    from modelforge.store.ops import remove

    remove("lin2:1", store=secure["store"])
    wait_until(lambda: call(secure, "GET", "/v2/models/lin2/versions/1")[0] == 404, timeout=30)


def _unservable(path):
    """A model with a sequence input: the store takes it with force, the server cannot."""
    import onnx
    from onnx import TensorProto, helper

    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceAt", ["s", "i"], ["y"])], "g", [seq, idx], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_version_that_cannot_load_is_left_out_and_aliases_stay(secure):
    from modelforge.store.ops import tag

    st = secure["store"]
    add_model(save(builders.linear(4, 2), secure["root"] / "multi.onnx"), "multi", store=st)
    tag("multi:1", "prod", store=st)
    wait_until(lambda: call(secure, "GET", "/v2/models/multi/versions/prod")[0] == 200)
    add_model(_unservable(secure["root"] / "seq.onnx"), "multi", store=st, force=True)
    wait_until(lambda: "multi' version 2 cannot be loaded" in secure["server"].stderr())
    tag("multi:2", "prod", store=st)
    tag("multi:1", "canary", store=st)  # once canary is served, the poller saw both tags
    wait_until(lambda: call(secure, "GET", "/v2/models/multi/versions/canary")[0] == 200)
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ).encode()
    for path in ("/v2/models/multi/infer", "/v2/models/multi/versions/prod/infer"):
        status, _, out = call(secure, "POST", path, body)
        assert status == 200 and out["model_version"] == "1", (path, out)
    status, _, meta = call(secure, "GET", "/v2/models/multi")
    assert meta["versions"] == ["1"]
    assert secure["server"].stderr().count("multi' version 2 cannot be loaded") == 1


def test_two_instances(secure):
    status, _, cfg = call(secure, "GET", "/v2/models/lin/config")
    assert cfg["instance_group"][0]["count"] == 2
    assert cfg["parameters"]["intra_op_thread_count"]["string_value"] == "1"
    results: list[int] = []
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ).encode()

    def one():
        for _ in range(10):
            results.append(call(secure, "POST", "/v2/models/lin/infer", body)[0])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 40


def test_request_timeout_is_503(secure):
    x = np.ones((4096, 512), dtype=np.float32)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [4096, 512],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    ).encode()
    status, headers, body = call(
        secure,
        "POST",
        "/v2/models/slow/infer",
        head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert status == 503 and "timeout" in body["error"]
    assert "retry-after" in headers


def _cli(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "modelforge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_cli_errors_before_serving(tmp_path, isolated_store):
    r = _cli("serve", "nosuchmodel", "--port", "0", "--json")
    assert r.returncode == 3, r.stderr
    envelope = json.loads(r.stdout)
    assert envelope["status"] == "error" and envelope["error"]["code"] == "model_not_found"
    r = _cli("serve", str(tmp_path / "missing.onnx"), "--port", "0")
    assert r.returncode == 3 and "does not exist" in r.stderr and not r.stdout
    r = _cli("serve", "--batching", "sometimes")
    assert r.returncode == 2 and "--batching" in r.stderr
    r = _cli("serve", "--instances", "64", "--threads", "64")
    assert r.returncode == 2 and "cores" in r.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = _cli("serve", str(bad), "--port", "0")
    assert r.returncode == 4 and "bad.onnx" in r.stderr and "Traceback" not in r.stderr
    good = save(builders.linear(), tmp_path / "good.onnx")
    r = _cli("serve", str(good), "--port", "0", "--provider-option", "no_such_key=1", "--json")
    assert r.returncode == 2, r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "unknown_provider_option"


def test_cli_port_in_use(tmp_path):
    import socket

    path = save(builders.linear(), tmp_path / "m.onnx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _cli("serve", str(path), "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen" in r.stderr


def test_missing_extra_is_one_line_with_the_pip_hint():
    code = (
        "import sys\nsys.modules['uvicorn'] = None\nfrom modelforge.cli.app import main\n"
        "sys.argv = ['modelforge', 'serve']\nmain()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: modelforge serve needs uvicorn, which is not installed Hint: pip install "
        "'modelforge[serve]' (and 'modelforge[grpc]' for --grpc-port)"
    ]


def test_help_imports_no_server_stack():
    code = (
        "import sys\nfrom modelforge.cli.app import main\nsys.argv=['modelforge','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('uvicorn','orjson','prometheus_client','grpc','tritonclient',"
        "'modelforge.serve.app') if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    assert "serve" in r.stdout
