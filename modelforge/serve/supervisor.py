"""The supervisor: the server runs in a worker process, restarted if it dies.

onnxruntime runs native code on untrusted models; a segfault, an abort or the kernel's
OOM killer takes the whole process with it, and no in-process handler can answer that.
So the ``modelforge serve`` process binds the listening sockets, starts a worker
(``python -m modelforge.serve.worker``) that inherits them, and waits. If the worker dies
without being asked to, the supervisor writes one line on stderr naming the signal or exit
status, and starts a new worker on the same sockets. While no worker is ready (at start, and
while a restarted one loads), a stand-in (:mod:`.standin`) answers HTTP: live 200, anything
else 503 with Retry-After, so clients and readiness probes get an answer instead of waiting
in the listen backlog; requests that were in flight in the dead worker fail with a dropped
connection. After ``MAX_RESTARTS`` deaths within ``RESTART_WINDOW_S`` it gives up and
exits with status 8 (resource limit). SIGTERM/SIGINT are forwarded once; the worker drains
and exits 0, and so does the supervisor. SIGHUP changes nothing (there is nothing to reload:
the store is re-read every poll interval, options need a restart) and says so on stderr; it
used to kill the supervisor without a word. Nothing heavy is imported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from modelforge.errors import ModelForgeError, ResourceLimitError, rebuild_error
from modelforge.serve.options import ServeOptions
from modelforge.serve.server import ReadyInfo, bind_socket, free_port
from modelforge.serve.standin import StandIn

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def options_to_json(opts: ServeOptions) -> dict[str, Any]:
    data = dataclasses.asdict(opts)
    data["session"] = dataclasses.asdict(opts.session) if opts.session is not None else None
    return data


def options_from_json(data: dict[str, Any]) -> ServeOptions:
    session = data.pop("session", None)
    if session is not None:
        from modelforge.engine.session import SessionConfig

        session["custom_ops"] = tuple(session.get("custom_ops") or ())
        session = SessionConfig(**session)
    return ServeOptions(**data, session=session)


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        why = {
            "SIGKILL": " (the kernel's OOM killer, or kill -9)",
            "SIGSEGV": " (a crash in native code, e.g. inside onnxruntime)",
            "SIGABRT": " (an abort in native code, e.g. inside onnxruntime)",
            "SIGBUS": " (a crash in native code)",
        }.get(name, "")
        return f"was killed by {name}{why}"
    return f"exited with status {rc}"


class _Worker:
    def __init__(self, refs: list[str], opts: ServeOptions, fd: int, restarts: int) -> None:
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        env["MODELFORGE_SERVE_FDS"] = f"{fd},{write_end}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelforge.serve.worker"],
            stdin=subprocess.PIPE,
            pass_fds=(fd, write_end),
            env=env,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it forwards once
        )
        os.close(write_end)
        assert self.proc.stdin is not None
        payload = {"refs": refs, "options": options_to_json(opts), "restarts": restarts}
        self.proc.stdin.write(json.dumps(payload).encode())
        self.proc.stdin.close()
        self.ready: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.ready_event = threading.Event()
        self.reader = threading.Thread(target=self._read, args=(read_end,), daemon=True)
        self.reader.start()

    def stop(self) -> None:
        """SIGTERM to a serving worker (it drains); a worker still loading has no requests
        to finish and may take long to notice a signal: it is killed at once."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.ready is not None else signal.SIGKILL)

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as fh:
            for raw in fh:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if msg.get("event") == "ready":
                    self.ready = msg["info"]
                    self.ready_event.set()
                elif msg.get("event") == "error":
                    self.error = msg["error"]
        self.ready_event.set()


class _Supervisor:
    def __init__(self, refs: list[str], opts: ServeOptions, on_ready: Any) -> None:
        self.refs = refs
        self.sock = bind_socket(opts.host, opts.port)
        if opts.grpc_port == 0:
            opts = dataclasses.replace(opts, grpc_port=free_port(opts.host))
        elif opts.grpc_port is not None:
            _check_grpc_port(opts.host, opts.grpc_port, self.sock)
        self.opts = opts
        self.on_ready = on_ready
        self.deaths: deque[float] = deque()
        self.restarts = 0
        self.stopping = threading.Event()
        self.worker: _Worker | None = None
        self.announced = False
        self.standin = StandIn(self.sock, tls=bool(opts.tls_cert))

    def forward(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: once, to the worker; stop listening (the worker's copy of the
        socket closes when it stops accepting, and new connections are then refused)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.standin.close()
        self.sock.close()
        w = self.worker
        if w is not None:
            w.stop()

    def hangup(self, signum: int, frame: Any) -> None:
        """SIGHUP: keep serving, and say why nothing was reloaded (a closed terminal may
        have sent it: a failed write is not an error)."""
        with contextlib.suppress(OSError):
            os.write(
                2,
                b"SIGHUP received: nothing to reload (the store is re-read every "
                b"--poll-interval seconds; changed options need a restart); still serving\n",
            )

    def run(self) -> int:
        while not self.stopping.is_set():
            worker = self._start()
            rc = worker.proc.wait()
            worker.reader.join(timeout=2)
            if self.stopping.is_set():
                # a worker stopped before it was ready had nothing to drain: it was killed
                return 0 if rc in (0, -signal.SIGTERM) or worker.ready is None else rc
            if worker.ready is None:
                if worker.error is not None:
                    raise rebuild_error(worker.error)
                if not self.announced:
                    raise ModelForgeError(
                        f"the server worker {_describe(rc)} while loading the models",
                        hint="run 'modelforge validate MODEL' on each model; rerun with "
                        "--debug for details",
                        code="worker_failed",
                    )
            self._died(worker, rc)
        return 0

    def _start(self) -> _Worker:
        """Start a worker and wait until it is ready (or gone); announce the first one."""
        self.standin.start(
            "the server worker is restarting after a crash (restart "
            f"{self.restarts}): its models are loading"
            if self.restarts
            else "the server is loading its models"
        )
        worker = _Worker(self.refs, self.opts, self.sock.fileno(), self.restarts)
        self.worker = worker
        if self.stopping.is_set():  # SIGTERM/SIGINT came while it was being spawned
            worker.stop()
        while not worker.ready_event.wait(0.2) and worker.proc.poll() is None:
            pass
        if worker.ready is not None:
            self.standin.stop()  # the worker accepts from now on
        if worker.ready is not None and not self.announced:
            self.announced = True
            if self.on_ready is not None:
                self.on_ready(ReadyInfo(**{**worker.ready, "pid": os.getpid()}))
        elif worker.ready is not None:
            sys.stderr.write(f"the restarted server worker (pid {worker.proc.pid}) is ready\n")
            sys.stderr.flush()
        return worker

    def _died(self, worker: _Worker, rc: int) -> None:
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESTART_WINDOW_S:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            raise ResourceLimitError(
                f"the server worker {_describe(rc)}; it died {len(self.deaths)} times within "
                f"{RESTART_WINDOW_S:.0f} s, giving up",
                hint="a model crashes onnxruntime or exhausts memory: find it with "
                "'modelforge validate MODEL'",
                code="worker_crashed",
            )
        self.restarts += 1
        if rc == 0:  # it drained and exited: a SIGTERM/SIGINT sent to the worker itself
            what = (
                f"warning: the server worker (pid {worker.proc.pid}) was stopped on its own "
                f"(a signal sent to it, not to the server, pid {os.getpid()}: stop the server "
                "with that pid); its requests finished."
            )
        else:
            what = (
                f"error: the server worker (pid {worker.proc.pid}) {_describe(rc)}; requests "
                "in flight were lost."
            )
        sys.stderr.write(f"{what} Restarting it on the same port (restart {self.restarts}).\n")
        sys.stderr.flush()

    def close(self) -> None:
        self.standin.close()
        w = self.worker
        if w is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
        self.sock.close()


def _check_grpc_port(host: str, port: int, http_sock: Any) -> None:
    """Refuse a --grpc-port that cannot be bound now, before the models load (the worker
    would find out only after loading them)."""
    try:
        bind_socket(host, port).close()
    except ModelForgeError as exc:
        http_sock.close()
        raise type(exc)(
            f"cannot listen for gRPC on {host}:{port}: {exc.message.rpartition(': ')[2]}",
            hint="pick another --grpc-port (0 = any free port) or stop what holds it",
            code=exc.code,
        ) from None


def supervise(
    refs: list[str], opts: ServeOptions, *, on_ready: Callable[[ReadyInfo], None] | None = None
) -> int:
    """Serve in a supervised worker until SIGTERM/SIGINT; returns the exit status."""
    sup = _Supervisor(refs, opts, on_ready)
    old = {s: signal.signal(s, sup.forward) for s in (signal.SIGTERM, signal.SIGINT)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, sup.hangup)
    try:
        return sup.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sup.close()
