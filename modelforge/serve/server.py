"""Running the server: uvicorn over the ASGI app, the ready line, graceful shutdown.

:func:`run_in_process` runs everything in this process. :func:`serve` (what the CLI uses)
runs it in a supervised worker process (:mod:`.supervisor`): the parent binds the sockets
and never imports onnxruntime; if the worker dies (a crash or memory blow-up inside
onnxruntime), the parent says so on stderr and starts a new worker on the same sockets.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelforge.serve.options import ServeOptions, library_arguments

log = logging.getLogger("modelforge.serve")


@dataclass(frozen=True)
class ReadyInfo:
    """What the ready line says: where the server listens and what it serves."""

    url: str
    host: str
    port: int
    grpc_port: int | None
    models: list[dict[str, Any]]
    pid: int
    worker_pid: int
    tls: bool = False
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "grpc_port": self.grpc_port,
            "tls": self.tls,
            "models": self.models,
            "pid": self.pid,
            "worker_pid": self.worker_pid,
            "restarts": self.restarts,
        }

    def line(self) -> str:
        parts = []
        for m in self.models:
            vs = ",".join(str(v) for v in m["versions"])
            al = "".join(f" {a}->{v}" for a, v in sorted(m["aliases"].items()))
            parts.append(f"{m['name']} [{vs}{al}]")
        grpc = f", gRPC on {self.host}:{self.grpc_port}" if self.grpc_port else ""
        return f"serving {len(self.models)} model(s) at {self.url}{grpc}: " + "; ".join(parts)


def bind_socket(host: str, port: int) -> socket.socket:
    from modelforge.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        if in_use:
            hint = "pick another --port (0 = any free port) or stop what holds it"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = "ports below 1024 need privileges: pick a --port of 1024 or more (0 = any)"
        else:  # unresolvable name (gaierror) or an address this machine does not have
            hint = (
                "give --host an address of this machine (127.0.0.1, 0.0.0.0 for every "
                "interface, ::1, or a resolvable name)"
            )
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint=hint,
            code="address_in_use" if in_use else "cannot_bind",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def models_summary(app: Any) -> list[dict[str, Any]]:
    out = []
    for name in sorted(app.registry.models):
        m = app.registry.models[name]
        out.append(
            {
                "name": name,
                "versions": list(m.available),
                "latest": m.latest,
                "aliases": dict(m.aliases),
                "loaded": sorted(m.loaded),
                "batching": sorted(v for v, sv in m.loaded.items() if sv.batcher.batching),
                "threads": {str(v): sv.opened.threads for v, sv in sorted(m.loaded.items())},
            }
        )
    return out


def run_in_process(
    models: list[str],
    options: ServeOptions,
    *,
    sock: socket.socket | None = None,
    on_ready: Callable[[ReadyInfo], None] | None = None,
    restarts: int = 0,
) -> int:
    """Load the models, listen, serve until SIGTERM/SIGINT; returns the exit status."""
    import uvicorn

    from modelforge.serve.app import create_app

    options = options.validate()
    _configure_logging(options)
    app = create_app(models, options)
    listener = sock or bind_socket(options.host, options.port)
    grpc_server = None
    grpc_stopped: Any = None  # the threading.Event of grpc_server.stop(), once stopping
    startup_error: list[Exception] = []
    config = _uvicorn_config(app, options)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            nonlocal grpc_server
            await super().startup(sockets=sockets)
            if self.should_exit:
                return
            gport = None
            if options.grpc_port is not None:
                from modelforge.errors import ModelForgeError
                from modelforge.serve.grpc_server import start_grpc

                try:
                    grpc_server, gport = start_grpc(app, options, asyncio.get_running_loop())
                except ModelForgeError as exc:  # --grpc-port in use: shut down cleanly (the
                    startup_error.append(exc)  # lifespan too), then raise it, no traceback
                    self.should_exit = True
                    return
            if options.loop_cpu is not None:  # after the sessions and gRPC's threads were
                _pin(options.loop_cpu, asyncio.get_running_loop())  # made: they keep every CPU
            info = _ready_info(app, options, listener, gport, restarts)
            if on_ready is not None:
                on_ready(info)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn's own handler re-raises the signal after shutting down (the process then
            # dies by SIGTERM); a drained server exits 0 instead. A second Ctrl-C forces.
            nonlocal grpc_stopped
            app.shutting_down = True
            if grpc_server is not None and grpc_stopped is None:  # no new calls from now on
                grpc_stopped = grpc_server.stop(grace=options.shutdown_timeout_s)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # gRPC calls in flight need the event loop (their batches run through it): let
            # them finish before uvicorn's shutdown stops the models and the loop
            if grpc_stopped is not None:
                await asyncio.to_thread(grpc_stopped.wait, options.shutdown_timeout_s + 1)
            await super().shutdown(sockets=sockets)

    server = _Server(config)
    server.run(sockets=[listener])
    if startup_error:
        raise startup_error[0]
    if grpc_server is not None:
        grpc_server.stop(grace=1).wait(2)
    return 0 if server.started else 1


def _pin(loop_cpu: int | str, loop: asyncio.AbstractEventLoop) -> None:
    """``--loop-cpu N`` pins the loop for good; ``auto`` also looks again every second."""
    from modelforge.serve import affinity

    if loop_cpu != "auto":
        affinity.pin_loop(int(loop_cpu))
        return
    if len(affinity.available() or ()) < 2:
        return  # nowhere to pin (or no affinity on this platform)
    try:
        mover = affinity.Mover()
    except OSError as exc:  # a sandbox that refuses sched_setaffinity: run unpinned
        logging.getLogger("modelforge.serve").debug("--loop-cpu auto: not pinned: %s", exc)
        return

    def tick() -> None:
        try:
            mover.check()
        except Exception as exc:  # /proc unreadable, a refused move: stay where it is
            logging.getLogger("modelforge.serve").debug("--loop-cpu auto: stopped: %s", exc)
            return
        loop.call_later(MOVER_INTERVAL_S, tick)

    loop.call_later(MOVER_INTERVAL_S, tick)


MOVER_INTERVAL_S = 1.0


def _uvicorn_config(app: Any, options: ServeOptions) -> Any:
    import uvicorn

    from modelforge.serve.http_protocol import READ_TIMEOUT_ATTR, CoalescingHttpToolsProtocol

    config = uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=CoalescingHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        timeout_graceful_shutdown=int(max(1, options.shutdown_timeout_s)),
        timeout_keep_alive=30,
        limit_concurrency=None,
        proxy_headers=False,  # X-Forwarded-* is not trusted: no proxy is assumed
    )
    setattr(config, READ_TIMEOUT_ATTR, options.read_timeout_s)  # read by the protocol
    return config


def _ready_info(
    app: Any, options: ServeOptions, listener: socket.socket, gport: int | None, restarts: int
) -> ReadyInfo:
    port = int(listener.getsockname()[1])
    scheme = "https" if options.tls_cert else "http"
    host = options.host if ":" not in options.host else f"[{options.host}]"
    return ReadyInfo(
        url=f"{scheme}://{host}:{port}",
        host=options.host,
        port=port,
        grpc_port=gport,
        models=models_summary(app),
        pid=os.getpid(),
        worker_pid=os.getpid(),
        tls=bool(options.tls_cert),
        restarts=restarts,
    )


def _configure_logging(options: ServeOptions) -> None:
    logger = logging.getLogger("modelforge.serve")
    if not any(getattr(h, "_mf_serve", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._mf_serve = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.ERROR if options.quiet else logging.WARNING)
    access = logging.getLogger("modelforge.serve.access")
    access.setLevel(logging.INFO if options.access_log else logging.WARNING)
    from modelforge.serve.http_protocol import quiet_malformed_requests

    quiet_malformed_requests()  # one "Invalid HTTP request" line a minute, not one each


def serve(
    models: list[str] | None = None,
    options: ServeOptions | None = None,
    *,
    on_ready: Callable[[ReadyInfo], None] | None = None,
    supervise: bool = True,
) -> int:
    """Serve ``models`` (store references or .onnx paths; none = the whole store) until
    SIGTERM/SIGINT. ``supervise``: run in a worker process that is restarted if it dies."""
    refs, opts = library_arguments(models, options)
    if not supervise:
        return run_in_process(refs, opts, on_ready=on_ready)
    from modelforge.serve.supervisor import supervise as run_supervised

    return run_supervised(refs, opts, on_ready=on_ready)


def check_extra() -> None:
    """One-line error with the pip hint when the ``serve`` extra is missing."""
    import importlib.util

    from modelforge.errors import UsageError

    def absent(name: str) -> bool:
        if name in sys.modules:
            return sys.modules[name] is None  # blocked on purpose (tests do this)
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in ("uvicorn", "orjson", "prometheus_client", "httptools") if absent(m)]
    if missing:
        raise UsageError(
            f"modelforge serve needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed",
            hint="pip install 'modelforge[serve]' (and 'modelforge[grpc]' for --grpc-port)",
            code="missing_extra",
        )
