"""Helpers for the serve tests: tiny models and a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.builders import _model

READY_TIMEOUT_S = 90


@dataclass
class Server:
    proc: subprocess.Popen
    info: dict
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.info['port']}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_server(args: list[str], env: dict | None = None, cwd: Path | None = None) -> Server:
    """``python -m modelforge serve ARGS --port 0 --json``; returns once the ready line came."""
    cmd = [sys.executable, "-m", "modelforge", "serve", *args, "--port", "0", "--json"]
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd, text=True
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    if not box or not box[0]:
        proc.kill()
        proc.wait(5)
        raise AssertionError("server did not become ready: " + "".join(lines))
    envelope = json.loads(box[0])
    assert envelope["status"] == "ok", envelope
    return Server(proc, envelope["result"], lines)


def wait_until(check, timeout: float = 20.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


# -- models -------------------------------------------------------------------------------
TYPES = {
    "f32": TensorProto.FLOAT,
    "f64": TensorProto.DOUBLE,
    "f16": TensorProto.FLOAT16,
    "i8": TensorProto.INT8,
    "i16": TensorProto.INT16,
    "i32": TensorProto.INT32,
    "i64": TensorProto.INT64,
    "u8": TensorProto.UINT8,
    "u16": TensorProto.UINT16,
    "u32": TensorProto.UINT32,
    "u64": TensorProto.UINT64,
    "b": TensorProto.BOOL,
    "s": TensorProto.STRING,
}


def types_model() -> onnx.ModelProto:
    """One input per datatype ``in_<k>`` [N, 2] -> Identity ``out_<k>``."""
    nodes = [helper.make_node("Identity", [f"in_{k}"], [f"out_{k}"]) for k in TYPES]
    graph = helper.make_graph(
        nodes,
        "types",
        [helper.make_tensor_value_info(f"in_{k}", t, ["N", 2]) for k, t in TYPES.items()],
        [helper.make_tensor_value_info(f"out_{k}", t, ["N", 2]) for k, t in TYPES.items()],
    )
    return _model(graph)


def bf16_model() -> onnx.ModelProto:
    """x bfloat16 [N, 2] -> y = Identity(x) (bfloat16), z = Cast(x, float)."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("Cast", ["x"], ["z"], to=TensorProto.FLOAT),
        ],
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["N", 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["N", 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    return _model(graph)


def fixed_model() -> onnx.ModelProto:
    """x float32 [1, 4] (no symbolic dims) -> y = 2 * x."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[two],
    )
    return _model(graph)


def slow_model(width: int = 512, depth: int = 64) -> onnx.ModelProto:
    """x float32 [N, width] through ``depth`` MatMuls + Tanh: time grows with N."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(
        (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32), "W"
    )
    nodes = []
    prev = "x"
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [prev, "W"], [f"m{i}"]))
        out = "y" if i == depth - 1 else f"t{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        initializer=[w],
    )
    return _model(graph)


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem): a one-day self-signed certificate for 127.0.0.1 (needs openssl;
    callers skip when it is missing)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def pick_model(width: int = 512, depth: int = 64) -> onnx.ModelProto:
    """``slow_model``'s chain on x [N, width], then y = GatherElements(t, idx [N, 1]): an
    index out of range makes onnxruntime fail on that request's rows only."""
    base = slow_model(width, depth)
    graph = base.graph
    graph.node[-1].output[0] = "t"
    graph.node.append(helper.make_node("GatherElements", ["t", "idx"], ["y"], axis=1))
    graph.input.append(helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]))
    graph.name = "pick"
    return base
