"""The floor of the serve benchmark: the least a Python OIP server can cost on this machine.

``floor_server.py --port P NAME=PATH [...]`` (run with an interpreter that has uvloop,
httptools, orjson, numpy and onnxruntime: ModelForge's own venv) answers
``POST /v2/models/NAME/infer`` on uvloop + httptools, with no framework at all. The first
request of each kind (path, body length, binary header length) is decoded and really run;
its answer is cached, and every identical request after that gets the cached bytes back
without decoding or running anything. What remains per request is the HTTP parsing, the
socket reads and writes and the kernel's loopback TCP work: a server doing any real work
per request costs more. The benchmark uses it to show how much of the machine the load
clients leave to any server (its throughput is the harness ceiling), never as a peer.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import httptools
import numpy as np
import onnxruntime as ort
import orjson
import uvloop

_DT = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_OIP = {np.dtype(v): k for k, v in _DT.items()}


def _session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def answer(name: str, sess: ort.InferenceSession, body: bytes, hlen: int | None) -> bytes:
    """Decode one request for real, run it, encode the answer as a whole HTTP response."""
    head = orjson.loads(body if hlen is None else body[:hlen])
    blobs = memoryview(body)[hlen or 0 :] if hlen is not None else memoryview(b"")
    feeds, pos = {}, 0
    for item in head["inputs"]:
        size = (item.get("parameters") or {}).get("binary_data_size")
        dtype = _DT[item["datatype"]]
        if size is None:
            arr = np.asarray(item["data"], dtype=dtype)
        else:
            arr = np.frombuffer(blobs[pos : pos + size], dtype=dtype)
            pos += size
        feeds[item["name"]] = arr.reshape(item["shape"])
    wanted = [o["name"] for o in head.get("outputs") or []] or [o.name for o in sess.get_outputs()]
    binary = {
        o["name"]: bool((o.get("parameters") or {}).get("binary_data"))
        for o in head.get("outputs") or []
    }
    outs, tail = [], b""
    for n, v in zip(wanted, sess.run(wanted, feeds), strict=True):
        v = np.ascontiguousarray(v)
        item = {"name": n, "datatype": _OIP[v.dtype], "shape": list(v.shape)}
        if binary.get(n):
            raw = v.astype(v.dtype.newbyteorder("<")).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            item["data"] = v.reshape(-1).tolist()
        outs.append(item)
    json = orjson.dumps({"model_name": name, "model_version": "1", "outputs": outs})
    extra = b""
    if tail:
        extra = b"Inference-Header-Content-Length: %d\r\n" % len(json)
    payload = json + tail
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(payload)
        + payload
    )


class Floor(asyncio.Protocol):
    sessions: dict[str, tuple[str, ort.InferenceSession]] = {}
    cache: dict[tuple[bytes, int, int | None], bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.hlen: int | None = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body, self.hlen = b"", [], None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"inference-header-content-length":
            self.hlen = int(value)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_method() == b"GET":  # health and readiness probes
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            return
        body = b"".join(self.body)
        key = (self.url, len(body), self.hlen)
        resp = self.cache.get(key)
        if resp is None:
            parts = self.url.split(b"/")
            name = parts[3].decode() if len(parts) > 3 else ""
            if name not in self.sessions:
                resp = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"
            else:
                resp = answer(name, self.sessions[name][1], body, self.hlen)
                self.cache[key] = resp
        self.transport.write(resp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("models", nargs="+", help="NAME=PATH")
    args = ap.parse_args()
    for spec in args.models:
        name, path = spec.split("=", 1)
        Floor.sessions[name] = (path, _session(path))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Floor, "127.0.0.1", args.port)
        await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":
    main()
