"""The Python API: create_app mounted inside another ASGI app, and serve() in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

import numpy as np

from tests import builders
from tests.serve_support import save, wait_until

MOUNTED = textwrap.dedent(
    """
    import socket, sys, uvicorn
    from modelforge import ServeOptions, create_app

    inner = create_app([sys.argv[1]], ServeOptions(name="mine", poll_interval_s=0))

    async def outer(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/inner/"):
            await inner({**scope, "root_path": "/inner"}, receive, send)
            return
        if scope["type"] == "lifespan":
            await inner(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"outer"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(outer, log_level="warning")).run(sockets=[sock])
    """
)

IN_PROCESS = textwrap.dedent(
    """
    import json, sys
    from modelforge import ServeOptions, serve_models as serve

    def ready(info):
        print(json.dumps(info.to_dict()), flush=True)

    sys.exit(serve([sys.argv[1]], ServeOptions(port=0, quiet=True), on_ready=ready,
                   supervise=False))
    """
)


def _post(url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _up(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _run(script, path):
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, line


def test_create_app_mounted_in_another_asgi_app(tmp_path):
    path = save(builders.linear(4, 1), tmp_path / "model.onnx")
    proc, line = _run(MOUNTED, path)
    try:
        base = f"http://127.0.0.1:{int(line)}"
        wait_until(lambda: _up(base + "/inner/v2/health/ready"))
        with urllib.request.urlopen(base + "/elsewhere") as r:
            assert r.read() == b"outer"
        x = np.ones((2, 4), dtype=np.float32)
        out = _post(
            base + "/inner/v2/models/mine/infer",
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}]},
        )
        assert out["model_name"] == "mine" and out["outputs"][0]["shape"] == [2, 1]
    finally:
        proc.terminate()
        assert proc.wait(20) in (0, -15)  # plain uvicorn re-raises SIGTERM after shutdown


def test_serve_in_process(tmp_path):
    path = save(builders.linear(4, 1), tmp_path / "model.onnx")
    proc, line = _run(IN_PROCESS, path)
    try:
        info = json.loads(line)
        assert info["worker_pid"] == info["pid"] == proc.pid
        assert info["models"][0]["name"] == "model"
        x = [[1.0, 2.0, 3.0, 4.0]]
        out = _post(
            info["url"] + "/v2/models/model/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]},
        )
        assert out["model_version"] == "1"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
