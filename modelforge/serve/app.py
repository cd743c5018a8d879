"""The ASGI application: routing, body limits, auth and the OIP endpoints.

A plain ASGI callable (no framework, no pydantic on the request path). Mount it in your own
ASGI app, or run it with :func:`modelforge.serve.server.serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
import zlib
from typing import Any

from modelforge.serve import encode
from modelforge.serve.batcher import Work
from modelforge.serve.codec import decode_http, parameters_object
from modelforge.serve.http_protocol import DISCONNECT
from modelforge.serve.options import ServeOptions, library_arguments
from modelforge.serve.protocol import (
    EXTENSIONS,
    SERVER_NAME,
    TRITON_ONLY,
    HttpError,
    bad_request,
    clip,
    not_found,
    not_implemented,
    too_large,
    unavailable,
)
from modelforge.serve.registry import Registry
from modelforge.serve.stats import Metrics

log = logging.getLogger("modelforge.serve")
access = logging.getLogger("modelforge.serve.access")

JSON = b"application/json"
Send = Any
Receive = Any


class ServeApp:
    """``ServeApp(registry, options)`` is an ASGI application over a :class:`Registry`."""

    def __init__(self, registry: Registry, options: ServeOptions, metrics: Metrics) -> None:
        self.registry = registry
        self.options = options
        self.metrics = metrics
        self.token = options.token.encode() if options.token else None
        self.shutting_down = False
        self._poller: asyncio.Task[None] | None = None

    # -- ASGI entry --------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        started = time.perf_counter_ns()
        status = 500
        try:
            status = await self._dispatch(scope, receive, send)
        except HttpError as err:
            status = err.status
            await self._error(send, err)
        except Exception:  # a bug: the traceback goes to the server's log, not to the client
            log.exception("internal error serving %s %s", scope["method"], clip(scope["path"]))
            await self._error(
                send,
                HttpError(
                    500, "internal error (a bug in ModelForge; the server log has the traceback)"
                ),
            )
            status = 500
        if self.options.access_log:
            ms = (time.perf_counter_ns() - started) / 1e6
            access.info(
                '%s "%s %s" %d %.2fms',
                _client(scope),
                scope["method"],
                clip(scope["path"], 200),
                status,
                ms,
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # reported to the server, which exits non-zero
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if not self.registry.ready:
            await asyncio.to_thread(self.registry.load_all_blocking)
        if self._poller is None and self.options.poll_interval_s > 0:
            self._poller = asyncio.get_running_loop().create_task(self.registry.poll_forever())

    async def shutdown(self) -> None:
        self.shutting_down = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
        await self.registry.shutdown()

    # -- plumbing ----------------------------------------------------------------------
    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        ctype: bytes = JSON,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _json(self, send: Send, obj: Any, status: int = 200) -> int:
        return await self._send(send, status, encode.dumps(obj))

    async def _error(self, send: Send, err: HttpError) -> None:
        extra = [(k.encode(), v.encode()) for k, v in (err.headers or {}).items()]
        with contextlib.suppress(Exception):  # the client may be gone
            await self._send(send, err.status, encode.dumps({"error": err.message}), extra=extra)

    def _authorize(self, scope: dict[str, Any]) -> None:
        if self.token is None:
            return
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        # one header only: a proxy and this server could each read a different one of two
        scheme, _, value = (given[0] if len(given) == 1 else b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
            raise HttpError(
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')",
                {"www-authenticate": "Bearer"},
            )

    async def _body(self, scope: dict[str, Any], receive: Receive) -> bytes:
        limit = self.options.max_request_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise bad_request("Content-Length is not an integer") from None
            if n > limit:
                raise _too_big(n, limit)
        else:  # chunked, or no body: looked at only here, off the Content-Length path
            _check_transfer_coding(scope)
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise _too_big(total, limit, "read")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        coding = (_header(scope, b"content-encoding") or b"identity").lower()
        if coding in (b"gzip", b"deflate"):
            body = _inflate(body, coding, limit)
        elif coding != b"identity":
            raise HttpError(
                415,
                f"Content-Encoding '{clip(coding.decode('latin-1'))}' is not "
                "supported (use gzip, deflate or none)",
            )
        return body

    # -- routing -----------------------------------------------------------------------
    async def _dispatch(self, scope: dict[str, Any], receive: Receive, send: Send) -> int:
        method = scope["method"]
        path = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):  # mounted under a prefix in another ASGI app
            path = path[len(root) :]
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["metrics"] and len(parts) == 1:
            self._authorize(scope)
            _method(method, "GET")
            body, ctype = self.metrics.render()
            return await self._send(send, 200, body, ctype.encode())
        if parts[:1] != ["v2"]:
            raise not_found(f"no endpoint at '{clip(scope['path'])}' (the API is under /v2)")
        rest = parts[1:]
        if rest[:1] == ["health"] and len(rest) == 2 and rest[1] in ("live", "ready"):
            _method(method, "GET")
            return await self._health(send, rest[1])
        self._authorize(scope)
        if not rest:
            _method(method, "GET")
            from modelforge import __version__

            meta = {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}
            return await self._json(send, meta)
        if rest[0] in TRITON_ONLY:
            raise not_implemented(TRITON_ONLY[rest[0]])
        if rest[0] == "repository":
            return await self._repository(scope, receive, send, rest[1:])
        if rest[0] == "models":
            return await self._models(scope, receive, send, rest[1:])
        raise not_found(f"no endpoint at '{clip(scope['path'])}'")

    async def _health(self, send: Send, which: str) -> int:
        if which == "live":
            return await self._json(send, {"live": True})
        if self.registry.ready and not self.shutting_down:
            return await self._json(send, {"ready": True})
        reason = "shutting down" if self.shutting_down else "loading models"
        raise unavailable(f"the server is not ready ({reason})")

    async def _models(
        self, scope: dict[str, Any], receive: Receive, send: Send, rest: list[str]
    ) -> int:
        method = scope["method"]
        if rest == ["stats"]:
            _method(method, "GET")
            stats = [
                sv.stats.to_dict()
                for m in self.registry.models.values()
                for sv in m.loaded.values()
            ]
            return await self._json(send, {"model_stats": stats})
        if not rest:
            raise not_found("name a model: v2/models/{name}")
        name, tail, version = rest[0], rest[1:], None
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                raise not_found("name a version: v2/models/{name}/versions/{version}")
            version, tail = tail[1], tail[2:]
        action = tail[0] if tail else ""
        if action in TRITON_ONLY:  # v2/models/{m}/trace/setting, .../generate[_stream]
            raise not_implemented(TRITON_ONLY[action])
        if len(tail) > 1 or action not in ("", "ready", "infer", "config", "stats"):
            raise not_found(f"no endpoint at '{clip(scope['path'])}'")
        if action == "infer":
            _method(method, "POST")
            return await self._infer(scope, receive, send, name, version)
        _method(method, "GET")
        if action == "ready":
            sv = self.registry.peek(name, version)
            if sv is None or self.shutting_down:
                raise unavailable(
                    f"model '{clip(name)}' version {clip(version or 'latest')} is not loaded"
                )
            return await self._json(send, {"name": name, "ready": True})
        if action == "stats":
            model = self.registry.model(name)
            if version is None:
                stats = [sv.stats.to_dict() for sv in model.loaded.values()]
            else:
                v = self.registry.version_number(model, version)
                stats = [model.loaded[v].stats.to_dict()] if v in model.loaded else []
            return await self._json(send, {"model_stats": stats})
        sv = await self.registry.get(name, version)
        from modelforge.serve import triton

        if action == "config":
            return await self._json(send, triton.model_config(sv, self.options))
        return await self._json(send, triton.model_metadata(self.registry.model(name), sv))

    async def _repository(
        self, scope: dict[str, Any], receive: Receive, send: Send, rest: list[str]
    ) -> int:
        index = rest == ["index"]
        control = len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload")
        if not (index or control):  # an unknown path is a 404 whatever the method
            raise not_found(f"no endpoint at '{clip(scope['path'])}'")
        _method(scope["method"], "POST")
        body = await self._body(scope, receive)
        req = _json_object(body) if body.strip() else {}
        if index:
            ready = req.get("ready")
            if ready is not None and not isinstance(ready, bool):
                raise bad_request(f"'ready' must be true or false; got {clip(ready)}")
            return await self._json(send, self.registry.index(bool(ready)))
        name = rest[1]
        self.registry.model(name)
        if rest[2] == "load":
            params = parameters_object(req.get("parameters"), "the load request")
            if any(str(k).startswith("file:") for k in params) or "config" in params:
                raise HttpError(
                    403,
                    "this server loads models from its store only: uploading files or a "
                    "config through the load request is refused",
                )
            await self.registry.load(name)
        else:
            await self.registry.unload(name)
        return await self._json(send, {})

    async def _infer(
        self, scope: dict[str, Any], receive: Receive, send: Send, name: str, version: str | None
    ) -> int:
        t0 = time.perf_counter_ns()
        if self.shutting_down:
            raise unavailable("the server is shutting down")
        sv = await self.registry.get(name, version)
        stats = sv.stats
        stats.enter()
        try:
            body = await self._body(scope, receive)
            hlen = _header(scope, b"inference-header-content-length")
            req = decode_http(
                body,
                None if hlen is None else hlen.decode("latin-1"),
                sv.opened.inputs,
                sv.opened.outputs,
            )
            t1 = time.perf_counter_ns()
            work = Work(req.feeds, req.rows, [w.port.name for w in req.wanted])
            hook = (scope.get("extensions") or {}).get(DISCONNECT)
            if hook is None:  # another ASGI server: a task watches ``receive``
                work.watch = receive
            else:  # ModelForge's own protocol calls back when the connection drops
                hook(functools.partial(sv.batcher.gone, work))
            result = await sv.batcher.infer(work, self.options.request_timeout_s)
            if work.gone:  # ran, but nobody is there to read it: not a success
                raise HttpError(499, f"the client disconnected while {sv.label} ran its request")
            t2 = time.perf_counter_ns()
            outs = [(w, *result[w.port.name]) for w in req.wanted]
            enc = encode.encode_response(name, str(sv.version), req.id, outs)
            if enc.header_length is None:
                status = await self._send(send, 200, enc.body)
            else:
                status = await self._send(
                    send,
                    200,
                    enc.body,
                    b"application/octet-stream",
                    [(b"inference-header-content-length", str(enc.header_length).encode())],
                )
            t3 = time.perf_counter_ns()
            stats.request_done(
                True, req.rows, t3 - t0, work.queue_ns, t1 - t0, work.infer_ns, t3 - t2
            )
            return status
        except HttpError as err:
            stats.request_done(False, 0, time.perf_counter_ns() - t0, 0, 0, 0, 0, err.status)
            raise
        finally:
            stats.leave()


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _method(method: str, allowed: str) -> None:
    if method != allowed and not (method == "HEAD" and allowed == "GET"):  # HEAD: no body
        allow = "GET, HEAD" if allowed == "GET" else allowed
        raise HttpError(
            405, f"use {allowed} for this endpoint (got {clip(method)})", {"allow": allow}
        )


def _check_transfer_coding(scope: dict[str, Any]) -> None:
    """The HTTP parser decodes ``chunked`` only: a body sent with another transfer coding
    (``gzip, chunked``) would reach the app still encoded. 501, as RFC 9112 asks."""
    coding = _header(scope, b"transfer-encoding")
    if coding is not None and coding.replace(b" ", b"").lower() != b"chunked":
        raise HttpError(
            501,
            f"Transfer-Encoding '{clip(coding.decode('latin-1'))}' is not supported: send "
            "the body chunked or with Content-Length (compress it with Content-Encoding: gzip)",
            {"connection": "close"},
        )


def _too_big(n: int, limit: int, how: str = "declared") -> HttpError:
    """413 for a body ``declared`` (Content-Length) over the limit, ``read`` past it while
    streamed (chunked: its size is unknown), or ``inflated`` past it (Content-Encoding)."""
    if how == "declared":
        what = f"the request body is {n} bytes, over"
    elif how == "read":
        what = f"the request body passed the limit after {n} bytes were read: it is over"
    else:
        what = "the request body inflates (Content-Encoding) to over"
    err = too_large(f"{what} the {limit}-byte limit (--max-request-size)")
    err.headers = {"connection": "close"}
    return err


def _inflate(body: bytes, coding: bytes, limit: int) -> bytes:
    wbits = 31 if coding == b"gzip" else 15
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(body, limit + 1)
    except zlib.error:
        raise bad_request(f"the body is not valid {coding.decode()} data") from None
    if len(out) > limit or d.unconsumed_tail:
        raise _too_big(limit + 1, limit, "inflated")
    if not d.eof or d.unused_data:  # truncated, or a second gzip member: never half a body
        raise bad_request(
            f"the {coding.decode()} body is truncated or has data after its end (one "
            "compressed stream per body); send the whole body compressed once"
        )
    return out


def _json_object(body: bytes) -> dict[str, Any]:
    import orjson

    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {clip(exc, 160)}") from None
    if not isinstance(value, dict):
        raise bad_request("the request body must be a JSON object")
    return value


def create_app(
    models: list[str] | None = None,
    options: ServeOptions | None = None,
    *,
    load: bool = True,
) -> ServeApp:
    """An ASGI application serving ``models`` (store references or .onnx paths; none = the
    whole store). ``load``: load and warm the models now (otherwise at ASGI start-up)."""
    refs, opts = library_arguments(models, options)
    metrics = Metrics()
    registry = Registry(refs, opts, metrics)
    if load:
        registry.load_all_blocking()
    return ServeApp(registry, opts, metrics)
