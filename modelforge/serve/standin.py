"""The supervisor's stand-in: answers on the listening socket while no worker does.

While a worker loads its models (at start, and after a crash while the new worker loads),
nothing accepts connections: a client used to wait in the listen backlog for as long as the
load took, its readiness probe hanging instead of failing. The stand-in accepts them meanwhile
and answers each with one short HTTP response, then closes it:

* ``GET /v2/health/live`` is 200 ``{"live": true}`` (the server process is alive: a liveness
  probe must not kill a server that is loading);
* anything else is 503 ``{"error": ...}`` with ``Retry-After: 1`` (readiness false).

With TLS the connection is closed at once (the stand-in holds no certificate): the client
gets a connection error, not a hang. One connection at a time, each bounded by a short
timeout and a small read; plain sockets only (nothing heavy is imported here).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading

READ_LIMIT = 16384
CLIENT_TIMEOUT_S = 1.0


class StandIn:
    def __init__(self, sock: socket.socket, tls: bool) -> None:
        self.sock = sock
        sock.setblocking(False)  # the worker accepts on it too (uvicorn sets the same)
        self.tls = tls
        self.why = "the server is loading its models"
        self._active = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="standin", daemon=True)
        self._thread.start()

    def start(self, why: str) -> None:
        self.why = why
        self._active.set()

    def stop(self) -> None:
        self._active.clear()

    def close(self) -> None:
        self._closed = True
        self._active.set()  # wake the loop so that it sees _closed

    def _loop(self) -> None:
        while True:
            self._active.wait()
            if self._closed:
                return
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.2)
                if not ready or not self._active.is_set():
                    continue
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                continue  # the worker took it first
            except (OSError, ValueError):  # the socket was closed (shutting down)
                return
            with contextlib.suppress(OSError), conn:
                if not self.tls:
                    self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < READ_LIMIT:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
        line = head.split(b"\r\n", 1)[0].split(b" ")
        path = line[1].split(b"?", 1)[0].rstrip(b"/") if len(line) > 1 else b""
        body: dict[str, object]
        if line[0] in (b"GET", b"HEAD") and path == b"/v2/health/live":
            status, body, extra = b"200 OK", {"live": True}, b""
        else:
            status = b"503 Service Unavailable"
            body = {"error": f"{self.why}; retry shortly (readiness is false until then)"}
            extra = b"retry-after: 1\r\n"
        payload = json.dumps(body).encode()
        conn.sendall(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(payload)).encode() + b"\r\n" + extra +
            b"connection: close\r\n\r\n" + (payload if line[0] != b"HEAD" else b"")
        )  # fmt: skip
