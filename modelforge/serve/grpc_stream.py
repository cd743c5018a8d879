"""gRPC ``ModelStreamInfer``: bidirectional streaming, answered request by request.

A mixin of the servicer in :mod:`.grpc_server` (it uses ``app``, ``grpc``, ``pb``,
``streams`` and ``model_infer`` from there).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from modelforge.serve.protocol import HttpError

if TYPE_CHECKING:
    from collections.abc import Callable

    from modelforge.serve.app import ServeApp

MAX_STREAMS = 48  # open ModelStreamInfer calls at once: the other threads stay for unary ones
STREAM_QUEUE = 4  # requests read ahead of the one being answered, per stream
log = logging.getLogger("modelforge.serve")


class StreamMixin:
    app: ServeApp
    grpc: Any
    pb: Any
    streams: threading.BoundedSemaphore

    model_infer: Callable[[Any], Any]  # the servicer's unary ModelInfer

    def model_stream_infer(self, requests: Any, context: Any) -> Any:
        """Bidirectional streaming (``tritonclient.grpc`` ``start_stream`` /
        ``async_stream_infer``): each request is answered in order, exactly as ModelInfer
        answers it; a refused request is an ``error_message`` on the stream, which goes on.

        An open stream holds one of the gRPC server's threads, so at most ``MAX_STREAMS``
        are open at once (beyond: UNAVAILABLE), leaving threads for unary calls, and a
        stream that receives no request for ``grpc_idle_s`` is ended (UNAVAILABLE). Requests
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
        idle_s = self.app.options.grpc_idle_s
        last = time.monotonic()
        try:
            while True:
                try:
                    request = inbox.get(timeout=0.2)
                except queue.Empty:
                    if self.app.shutting_down:
                        context.abort(
                            self.grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
                        )
                    if idle_s is not None and time.monotonic() - last >= idle_s:
                        context.abort(
                            self.grpc.StatusCode.UNAVAILABLE,
                            f"no request arrived on this stream for {idle_s:g} s, so the "
                            "server ended it (--grpc-idle-timeout); open a new stream",
                        )
                    continue
                if request is None:
                    return
                yield self._stream_answer(request)
                last = time.monotonic()
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
