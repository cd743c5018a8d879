"""gRPC ``inference.GRPCInferenceService`` (KServe v2 / Triton), in the ``grpc`` extra.

The message classes and servicer base come from ``tritonclient.grpc.service_pb2(_grpc)``,
which are generated from the same proto Triton serves. The gRPC server runs its own thread
pool; each call hands its work to the HTTP server's event loop (the same registry, batcher
and statistics), so HTTP and gRPC requests batch together.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from modelforge.serve.protocol import (
    EXTENSIONS,
    SERVER_NAME,
    HttpError,
    bad_request,
    clip,
    not_implemented,
)

if TYPE_CHECKING:
    from modelforge.serve.app import ServeApp
    from modelforge.serve.options import ServeOptions

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
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
THREADS = 64  # the gRPC server's pool: a unary call holds a thread while it waits
MAX_STREAMS = 48  # open ModelStreamInfer calls at once: the other threads stay for unary ones
STREAM_QUEUE = 4  # requests read ahead of the one being answered, per stream
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


def decode_grpc(request: Any, inputs: list[Any], outputs: list[Any]) -> Any:
    """ModelInferRequest -> codec.Request (raw_input_contents or typed contents), checked
    exactly like an HTTP request (same messages)."""
    from modelforge.serve.checks import check_tensor
    from modelforge.serve.codec import (
        Request,
        Wanted,
        _from_bytes,
        check_shape,
        port_for,
        refuse_unsupported,
        require_all,
    )

    for t in request.inputs:  # before counting raw contents: a shared-memory input has none
        if t.parameters:
            refuse_unsupported(t.parameters, "input", t.name)
    for o in request.outputs:
        if o.parameters:
            refuse_unsupported(o.parameters, "output", o.name)
    ports = {p.name: p for p in inputs}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "once it is used, every input's bytes go there, in the order of 'inputs' (as "
            "Triton requires); or send every input in typed contents"
        )
    feeds: dict[str, Any] = {}
    for i, t in enumerate(request.inputs):
        port = port_for(ports, feeds, t.name, t.datatype)
        shape = [int(d) for d in t.shape]
        if any(d < 0 for d in shape):
            raise bad_request(f"input '{clip(t.name)}' has a negative dimension")
        check_shape(t.name, shape)
        if raw and t.contents.ListFields():
            raise bad_request(
                f"input '{clip(t.name)}' has typed contents although the request uses "
                "raw_input_contents; send every input one way"
            )
        arr = _from_bytes(t.name, t.datatype, raw[i], shape) if raw else _from_contents(t, shape)
        check_tensor(port, arr)
        feeds[t.name] = arr
    rows = require_all(feeds, inputs)
    by_name = {p.name: p for p in outputs}
    wanted: list[Wanted] = []
    for o in request.outputs:
        if o.name not in by_name:
            raise bad_request(
                f"the model has no output '{clip(o.name)}' (outputs: "
                f"{', '.join(clip(p) for p in by_name)})"
            )
        if all(w.port.name != o.name for w in wanted):  # asked twice: answered once, as HTTP
            wanted.append(Wanted(by_name[o.name], True))
    if not wanted:
        wanted = [Wanted(p, True) for p in outputs]
    return Request(request.id, feeds, wanted, rows)


def _from_contents(t: Any, shape: list[int]) -> Any:
    """A tensor sent in the typed ``contents`` fields instead of raw bytes."""
    import numpy as np

    from modelforge.serve.protocol import OIP_NUMPY

    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise bad_request(f"input '{clip(t.name)}' is {t.datatype}: send it in raw_input_contents")
    values = list(getattr(t.contents, field))
    others = [f.name for f, _ in t.contents.ListFields() if f.name != field]
    if others:  # Triton refuses contents in a field that is not the datatype's
        raise bad_request(
            f"input '{clip(t.name)}' is {t.datatype}: its values go in contents.{field}, "
            f"not {', '.join(others)}"
        )
    if t.datatype == "BYTES":
        try:
            arr = np.array([v.decode("utf-8") for v in values], dtype=object)
        except UnicodeDecodeError:
            raise bad_request(f"input '{clip(t.name)}' holds non-UTF-8 BYTES") from None
    else:
        try:  # numpy refuses a Python int outside the dtype (300 for UINT8)
            arr = np.asarray(values, dtype=OIP_NUMPY[t.datatype])
        except OverflowError:
            raise bad_request(
                f"input '{clip(t.name)}' holds values outside the {t.datatype} range"
            ) from None
    if arr.size != math.prod(shape):
        raise bad_request(
            f"input '{clip(t.name)}' has {arr.size} values but shape {shape} needs "
            f"{math.prod(shape)}"
        )
    return arr.reshape(shape)


class _Servicer:
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

    def model_stream_infer(self, requests: Any, context: Any) -> Any:
        """Bidirectional streaming (``tritonclient.grpc`` ``start_stream`` /
        ``async_stream_infer``): each request is answered in order, exactly as ModelInfer
        answers it; a refused request is an ``error_message`` on the stream, which goes on.

        An open stream holds one of the gRPC server's threads, so at most ``MAX_STREAMS``
        are open at once (beyond: UNAVAILABLE), leaving threads for unary calls. Requests
        are read by a thread of their own into a small bounded queue (gRPC's flow control
        still holds a fast sender back), so that at shutdown an idle stream ends at once
        (UNAVAILABLE) instead of holding the server for the whole grace period; requests
        already received are still answered (503: shutting down)."""
        return self._stream(requests, context)

    def _stream(self, requests: Any, context: Any) -> Any:
        import queue

        # taken once the stream is being served (a generator never started runs no
        # finally: a slot taken before it would leak)
        if not self.streams.acquire(blocking=False):
            context.abort(
                self.grpc.StatusCode.UNAVAILABLE,
                f"{MAX_STREAMS} gRPC streams are open already, the most this server keeps; "
                "close one, or use unary ModelInfer calls",
            )
        from modelforge.engine.runner import put_until

        inbox: queue.Queue[Any] = queue.Queue(maxsize=STREAM_QUEUE)
        done = threading.Event()

        def put(item: Any) -> bool:
            return put_until(inbox, item, done, 0.2)

        def read() -> None:
            try:
                for request in requests:
                    if not put(request):
                        return
            except Exception:  # the call was cancelled or the client went away
                pass
            put(None)

        threading.Thread(target=read, name="mf-grpc-stream", daemon=True).start()
        try:
            while True:
                try:
                    request = inbox.get(timeout=0.2)
                except queue.Empty:
                    if self.app.shutting_down:
                        context.abort(
                            self.grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
                        )
                    continue
                if request is None:
                    return
                yield self._stream_answer(request)
        finally:
            done.set()
            self.streams.release()

    def _stream_answer(self, request: Any) -> Any:
        try:
            return self.pb.ModelStreamInferResponse(infer_response=self.model_infer(request))
        except HttpError as err:
            return self._stream_error(request, err.message)
        except CancelledError:  # the event loop stopped under the call: shutting down
            return self._stream_error(request, "the server is shutting down")
        except Exception:  # a bug: logged with its traceback, as for HTTP; the stream goes on
            log.exception("internal error serving gRPC ModelStreamInfer")
            return self._stream_error(
                request, "internal error (a bug in ModelForge; the server log has the traceback)"
            )

    def _stream_error(self, request: Any, message: str) -> Any:
        return self.pb.ModelStreamInferResponse(
            error_message=message,
            infer_response=self.pb.ModelInferResponse(model_name=request.model_name, id=request.id),
        )

    def model_infer(self, request: Any) -> Any:
        import time

        from modelforge.serve.batcher import Work
        from modelforge.serve.encode import tensor_bytes

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
            resp = self.pb.ModelInferResponse(
                model_name=request.model_name, model_version=str(sv.version), id=request.id
            )
            for w in req.wanted:
                arr, labels = result[w.port.name]
                out = resp.outputs.add(
                    name=w.port.name, datatype=w.port.datatype, shape=list(arr.shape)
                )
                if labels is not None:
                    out.parameters["labels"].string_param = json.dumps(
                        [v.item() if hasattr(v, "item") else v for v in labels]
                    )
                resp.raw_output_contents.append(tensor_bytes(w.port.datatype, arr))
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
            # ping connections idle for a minute: a client gone without closing (a dead
            # host) has its calls cancelled, and its streams give their slots back
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
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
    if options.tls_cert and options.tls_key:
        with open(options.tls_key, "rb") as k, open(options.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if not port:
        from modelforge.errors import UsageError

        raise UsageError(
            f"cannot listen for gRPC on {address}",
            hint="pick another --grpc-port",
            code="cannot_bind",
        )
    server.start()
    return server, port
