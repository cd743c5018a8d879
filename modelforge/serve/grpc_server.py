"""gRPC ``inference.GRPCInferenceService`` (KServe v2 / Triton), in the ``grpc`` extra.

The message classes and servicer base come from ``tritonclient.grpc.service_pb2(_grpc)``,
which are generated from the same proto Triton serves. The gRPC server runs its own thread
pool; each call hands its work to the HTTP server's event loop (the same registry, batcher
and statistics), so HTTP and gRPC requests batch together.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from modelforge.serve.grpc_stream import MAX_STREAMS, StreamMixin
from modelforge.serve.protocol import (
    EXTENSIONS,
    SERVER_NAME,
    HttpError,
    not_implemented,
)

if TYPE_CHECKING:
    from modelforge.serve.app import ServeApp
    from modelforge.serve.options import ServeOptions

_OPEN = {"ServerLive", "ServerReady"}
# Triton's methods outside the OIP that this server does not implement: UNIMPLEMENTED
# naming the extension (grpcio's default says only "Method not implemented!")
_TRITON_ONLY = {
    "LogSettings": "logging",
    "TraceSetting": "trace",
    "SystemSharedMemoryStatus": "system shared-memory",
    "SystemSharedMemoryRegister": "system shared-memory",
    "SystemSharedMemoryUnregister": "system shared-memory",
    "CudaSharedMemoryStatus": "CUDA shared-memory",
    "CudaSharedMemoryRegister": "CUDA shared-memory",
    "CudaSharedMemoryUnregister": "CUDA shared-memory",
}
HANDSHAKE_S = 30.0  # at most, for a new connection's handshake (--grpc-idle-timeout if less)
THREADS = 64  # the gRPC server's pool: a unary call holds a thread while it waits
log = logging.getLogger("modelforge.serve")


def _import() -> tuple[Any, Any, Any]:
    from modelforge.errors import UsageError

    # grpc's C core logs one INFO line per failed TLS handshake (a plaintext client, a port
    # scanner) on stderr: unbounded output driven by untrusted clients. Errors still show;
    # an operator who sets GRPC_VERBOSITY keeps their choice.
    if not os.environ.get("GRPC_VERBOSITY"):
        os.environ["GRPC_VERBOSITY"] = "ERROR"
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError:
        raise UsageError(
            "--grpc-port needs grpcio and tritonclient[grpc], which are not installed",
            hint="pip install 'modelforge[grpc]'",
            code="missing_extra",
        ) from None
    return grpc, service_pb2, service_pb2_grpc


class _Servicer(StreamMixin):
    def __init__(self, app: ServeApp, loop: asyncio.AbstractEventLoop, pb: Any, grpc: Any):
        self.app = app
        self.loop = loop
        self.pb = pb
        self.grpc = grpc
        self.token = app.options.token
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _abort(self, context: Any, err: HttpError) -> None:
        context.abort(getattr(self.grpc.StatusCode, err.grpc_code()), err.message)

    def _auth(self, context: Any, method: str) -> None:
        if self.token is None or method in _OPEN:
            return
        given_all = [v for k, v in context.invocation_metadata() if k == "authorization"]
        given = str(given_all[0]) if len(given_all) == 1 else ""  # one only, as over HTTP
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), self.token):
            context.abort(
                self.grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token (metadata 'authorization: Bearer T')",
            )

    def guard(self, method: str, fn: Any) -> Any:
        def call(request: Any, context: Any) -> Any:
            self._auth(context, method)
            try:
                return fn(request, context) if method == "ModelStreamInfer" else fn(request)
            except HttpError as err:
                self._abort(context, err)
            except CancelledError:  # the event loop stopped under the call: shutting down
                context.abort(self.grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            except Exception:  # a bug: the traceback goes to the server's log, as for HTTP
                log.exception("internal error serving gRPC %s", method)
                context.abort(
                    self.grpc.StatusCode.INTERNAL,
                    "internal error (a bug in ModelForge; the server log has the traceback)",
                )

        return call

    # -- methods ----------------------------------------------------------------------
    def server_live(self, request: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    def server_ready(self, request: Any) -> Any:
        ready = self.app.registry.ready and not self.app.shutting_down
        return self.pb.ServerReadyResponse(ready=ready)

    def model_ready(self, request: Any) -> Any:
        try:
            sv = self.app.registry.peek(request.name, request.version or None)
        except HttpError:
            return self.pb.ModelReadyResponse(ready=False)
        return self.pb.ModelReadyResponse(ready=sv is not None and not self.app.shutting_down)

    def server_metadata(self, request: Any) -> Any:
        from modelforge import __version__

        return self.pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    def model_metadata(self, request: Any) -> Any:
        from modelforge.serve.triton import model_metadata

        sv = self._call(self.app.registry.get(request.name, request.version or None))
        meta = model_metadata(self.app.registry.model(request.name), sv)
        T = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[T(**t) for t in meta["inputs"]],
            outputs=[T(**t) for t in meta["outputs"]],
        )

    def model_config(self, request: Any) -> Any:
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        from modelforge.serve.triton import model_config

        sv = self._call(self.app.registry.get(request.name, request.version or None))
        cfg = json_format.ParseDict(
            model_config(sv, self.app.options),
            model_config_pb2.ModelConfig(),
            ignore_unknown_fields=True,
        )
        return self.pb.ModelConfigResponse(config=cfg)

    def model_statistics(self, request: Any) -> Any:
        from google.protobuf import json_format

        reg = self.app.registry
        if request.name:
            model = reg.model(request.name)
            svs = list(model.loaded.values())
            if request.version:
                v = reg.version_number(model, request.version)
                svs = [model.loaded[v]] if v in model.loaded else []
        else:
            svs = [sv for m in reg.models.values() for sv in m.loaded.values()]
        data = {"model_stats": [sv.stats.to_dict() for sv in svs]}
        return json_format.ParseDict(
            data, self.pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    def repository_index(self, request: Any) -> Any:
        async def index() -> list[dict[str, Any]]:
            return self.app.registry.index(bool(request.ready))

        M = self.pb.RepositoryIndexResponse.ModelIndex
        return self.pb.RepositoryIndexResponse(models=[M(**m) for m in self._call(index())])

    def repository_model_load(self, request: Any) -> Any:
        """Warm a store model (as ``POST v2/repository/models/NAME/load``): never files or
        a config sent with the request."""
        params = request.parameters
        if "config" in params or any(k.startswith("file:") for k in params):
            raise HttpError(
                403,
                "this server loads models from its store only: uploading files or a config "
                "through the load request is refused",
            )

        async def load() -> None:
            self.app.registry.model(request.model_name)
            await self.app.registry.load(request.model_name)

        self._call(load())
        return self.pb.RepositoryModelLoadResponse()

    def repository_model_unload(self, request: Any) -> Any:
        async def unload() -> None:
            self.app.registry.model(request.model_name)
            await self.app.registry.unload(request.model_name)

        self._call(unload())
        return self.pb.RepositoryModelUnloadResponse()

    def model_infer(self, request: Any) -> Any:
        import time

        from modelforge.serve.batcher import Work
        from modelforge.serve.grpc_codec import decode_grpc, encode_grpc

        t0 = time.perf_counter_ns()
        if self.app.shutting_down:
            raise HttpError(503, "the server is shutting down")
        sv = self._call(self.app.registry.get(request.model_name, request.model_version or None))
        sv.stats.enter()
        try:
            req = decode_grpc(request, sv.opened.inputs, sv.opened.outputs)
            t1 = time.perf_counter_ns()
            work = Work(req.feeds, req.rows, [w.port.name for w in req.wanted])
            result = self._call(sv.batcher.infer(work, self.app.options.request_timeout_s))
            t2 = time.perf_counter_ns()
            resp = encode_grpc(self.pb, request, sv.version, req.wanted, result)
            sv.stats.request_done(
                True,
                req.rows,
                time.perf_counter_ns() - t0,
                work.queue_ns,
                t1 - t0,
                work.infer_ns,
                time.perf_counter_ns() - t2,
            )
            return resp
        except HttpError as err:
            sv.stats.request_done(False, 0, time.perf_counter_ns() - t0, 0, 0, 0, 0, err.status)
            raise
        finally:
            sv.stats.leave()


def _connection_options(idle_s: float | None) -> list[tuple[str, int]]:
    """grpcio options that drop idle and dead connections (docs/serve.md, "gRPC")."""
    opts = [
        # ping a connection silent for a minute: a client gone without closing (a dead
        # host) has its calls cancelled within 20 s more, and its streams free their slots
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # clients may ping too (every 10 s at most), also between calls
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # a connection is renewed after an hour (a client reconnects at once), its calls
        # given 5 minutes to finish: no connection is held for ever
        ("grpc.max_connection_age_ms", 3_600_000),
        ("grpc.max_connection_age_grace_ms", 300_000),
    ]
    # a connection that has not finished its HTTP/2 (and TLS) handshake in this long is
    # closed: gRPC's own default is 120 s, a long time for a socket that says nothing
    handshake_s = min(HANDSHAKE_S, idle_s) if idle_s is not None else HANDSHAKE_S
    opts.append(("grpc.server_handshake_timeout_ms", int(handshake_s * 1000)))
    if idle_s is not None:  # a connection without calls for idle_s gets GOAWAY
        opts.append(("grpc.max_connection_idle_ms", int(idle_s * 1000)))
    return opts


def _unimplemented(extension: str) -> Any:
    def call(request: Any) -> Any:
        raise not_implemented(extension)

    return call


def start_grpc(
    app: ServeApp, options: ServeOptions, loop: asyncio.AbstractEventLoop
) -> tuple[Any, int]:
    """Start the gRPC server on ``options.grpc_port``; returns (server, bound port)."""
    grpc, pb, pb_grpc = _import()
    servicer = _Servicer(app, loop, pb, grpc)
    limit = options.max_request_bytes
    server = grpc.server(
        # a call holds its thread while it waits on the event loop, a stream while it is
        # open: idle threads cost little
        ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="mf-grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
            *_connection_options(options.grpc_idle_s),
        ],
    )
    methods = {
        "ServerLive": servicer.server_live,
        "ServerReady": servicer.server_ready,
        "ModelReady": servicer.model_ready,
        "ServerMetadata": servicer.server_metadata,
        "ModelMetadata": servicer.model_metadata,
        "ModelConfig": servicer.model_config,
        "ModelStatistics": servicer.model_statistics,
        "ModelInfer": servicer.model_infer,
        "ModelStreamInfer": servicer.model_stream_infer,
        "RepositoryIndex": servicer.repository_index,
        "RepositoryModelLoad": servicer.repository_model_load,
        "RepositoryModelUnload": servicer.repository_model_unload,
        **{name: _unimplemented(ext) for name, ext in _TRITON_ONLY.items()},
    }
    base = pb_grpc.GRPCInferenceServiceServicer
    impl = type(
        "Servicer",
        (base,),
        {
            name: (lambda f: lambda self, req, ctx: f(req, ctx))(servicer.guard(name, fn))
            for name, fn in methods.items()
        },
    )()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(impl, server)
    address = (
        f"{options.host if ':' not in options.host else f'[{options.host}]'}:"
        f"{options.grpc_port or 0}"
    )
    try:  # grpcio returns 0 on a failed bind, or (newer) raises RuntimeError
        if options.tls_cert and options.tls_key:
            with open(options.tls_key, "rb") as k, open(options.tls_cert, "rb") as c:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        from modelforge.errors import UsageError

        server.stop(None)
        raise UsageError(
            f"cannot listen for gRPC on {address}: the port is in use or not permitted",
            hint="pick another --grpc-port (0 = any free port) or stop what holds it",
            code="cannot_bind",
        )
    server.start()
    return server, port
