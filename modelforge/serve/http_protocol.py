"""uvicorn's httptools protocol, writing each response's status line + headers and its body
in one ``transport.write`` (one syscall, one TCP segment for small answers).

uvicorn writes the headers on ``http.response.start`` and the body on ``http.response.body``:
two syscalls, and the client wakes up twice. For a ~300-byte inference answer that second
write costs as much as decoding the request. The cycle's transport is wrapped so that the
header block is held until the body arrives; everything else (``100 Continue``, error
responses the protocol writes itself) goes straight through.

It also tells the application when the client disconnects, through a scope extension
(``scope["extensions"][DISCONNECT](callback)``): a portable ASGI app learns that only by
awaiting ``receive()`` in a task of its own, one task per request. And it bounds what
httptools would buffer without limit (request line + headers: ``MAX_HEAD_BYTES``, 431), and
answers malformed HTTP in the API's JSON error shape (400), closing without a reset.

uvicorn's keep-alive timeout only runs between requests: a connection that sends nothing,
or stops inside a request's head or body, would be held forever, and one that sends a byte
every few seconds would hold a request open for as long as it likes. So while a request is
being read, a connection that sends no byte for ``timeout_keep_alive`` is dropped, and a
request whose head and body have not all arrived ``read_timeout`` seconds after its first
byte is answered 408 and closed (``READ_TIMEOUT_ATTR`` on the uvicorn config; none = no
bound). A client that reads nothing of its answer for ``timeout_keep_alive`` while the
transport's buffer is full is aborted: uvicorn's close would wait for it to read, for ever,
holding the answer. One timer per connection does all this: each read only notes the
time, and the timer, when it fires, looks at the clocks and sets itself for the next
deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DISCONNECT = "modelforge.disconnect"  # scope extension: register a callback for a lost client
MAX_HEAD_BYTES = 1 << 20  # request line + headers; httptools itself buffers them unbounded
SHUTDOWN_POLL_S = 0.1  # at shutdown, how often a TLS connection is checked for abort
LINGER_S = 2.0  # how long a refused connection's input is drained before it is closed
READ_TIMEOUT_ATTR = "mf_read_timeout"  # on uvicorn's Config: seconds a request may take to arrive
EARLY_S = 0.002  # a timer may fire this early (uvloop rounds to milliseconds)


class MalformedRequestLog(logging.Filter):
    """uvicorn logs a warning for every malformed request: hostile traffic would flood
    stderr. One such line per ``every_s``, counting the ones left out."""

    MESSAGE = "Invalid HTTP request received."

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last = -math.inf
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = (
                f"{self.MESSAGE} ({self.dropped} more since the last such line, not logged; "
                f"at most one a {self.every_s:g} s)"
            )
            record.args = ()
        self.last, self.dropped = now, 0
        return True


def quiet_malformed_requests(every_s: float = 60.0) -> None:
    """Install :class:`MalformedRequestLog` on uvicorn's error logger (once)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, MalformedRequestLog) for f in logger.filters):
        logger.addFilter(MalformedRequestLog(every_s))


class _Coalescing:
    __slots__ = ("_transport", "_held", "_first", "_close")

    def __init__(self, transport: Any, close: Callable[[], None]) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._first = True
        self._close = close  # how the cycle's "connection: close" ends the connection

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
                self._held = data
                return
            self._first = True  # 100 Continue: the real header block is still to come
        if self._held is not None:
            data = self._held + data
            self._held = None
        self._transport.write(data)

    def flush(self) -> None:
        """Write a held header block (a response without a body write: HEAD)."""
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None

    def close(self) -> None:
        self.flush()
        self._close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    # callbacks of the request being answered (pipelined requests run one after another)
    _mf_on_lost: list[Callable[[], None]]
    # bytes received while a request's head (request line + headers) is incomplete
    _mf_head_bytes = 0
    _mf_in_head = True
    _mf_refused = False
    _mf_reading = False  # between a request's first byte and its last
    _mf_timer: asyncio.TimerHandle | None = None  # the connection's one timer (see the module)
    _mf_last = 0.0  # loop time of the last bytes received
    _mf_begun = 0.0  # loop time the request being read began
    _mf_read_timeout: float | None = None
    _mf_write_stalled = 0.0  # loop time the write buffer filled up, or last shrank
    _mf_write_left = 0  # bytes in the write buffer then

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._mf_read_timeout = getattr(self.config, READ_TIMEOUT_ATTR, None)
        self._mf_last = self.loop.time()
        self._mf_arm(self._mf_last + self.timeout_keep_alive)  # it must send something

    def data_received(self, data: bytes) -> None:
        if self._mf_refused:
            return  # answered and closing: what the client still sends is dropped
        self._mf_last = self.loop.time()
        super().data_received(data)
        if self._mf_in_head and not self._mf_refused:
            self._mf_head_bytes += len(data)  # over by at most the tail of one read
            if self._mf_head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    b"the request line and headers are over %d bytes; send smaller headers"
                    % MAX_HEAD_BYTES,
                )
        if self._mf_timer is None and (self._mf_reading or self._mf_idle()):
            self._mf_arm(self._mf_last + self.timeout_keep_alive)

    def _mf_idle(self) -> bool:
        """Between requests with no timer of uvicorn's running (bytes that began no request,
        e.g. bare CRLFs, which httptools skips: uvicorn cancelled its keep-alive timer)."""
        return (
            not self._mf_reading
            and (self.cycle is None or self.cycle.response_complete)
            and getattr(self, "timeout_keep_alive_task", None) is None
        )

    def _mf_arm(self, when: float) -> None:
        if self._mf_timer is not None:
            self._mf_timer.cancel()
            self._mf_timer = None
        if not self._mf_refused and not self.transport.is_closing():
            self._mf_timer = self.loop.call_at(when, self._mf_tick)

    def pause_writing(self) -> None:
        """The client is not reading its answer as fast as it is written (the transport's
        buffer is full): the timer drops it if it reads nothing for ``timeout_keep_alive``
        (the buffer did not shrink); a slow reader is not dropped."""
        super().pause_writing()
        self._mf_write_stalled = self.loop.time()
        self._mf_write_left = self.transport.get_write_buffer_size()
        if self._mf_timer is None:
            self._mf_timer = self.loop.call_at(
                self._mf_write_stalled + self.timeout_keep_alive, self._mf_tick
            )

    def _mf_tick(self) -> None:
        """The connection's timer: drop a connection that sent no byte for
        ``timeout_keep_alive`` while a request was being read (or before the first one), or
        that read nothing of its answer for as long (a closing transport waits for its
        buffer to be read, for ever), and answer 408 to a request not in full
        ``read_timeout`` s after its first byte."""
        self._mf_timer = None
        now = self.loop.time() + EARLY_S
        if self.flow.write_paused:
            due = self._mf_write_stalled + self.timeout_keep_alive
            if now >= due:
                left = self.transport.get_write_buffer_size()
                if left >= self._mf_write_left:  # nothing read: free the answer's buffer
                    self.transport.abort()
                    return
                self._mf_write_left, self._mf_write_stalled = left, now  # slow, not stopped
                due = now + self.timeout_keep_alive
            self._mf_timer = self.loop.call_at(due, self._mf_tick)
            return
        if self._mf_refused or self.transport.is_closing():
            return
        idle_due = self._mf_last + self.timeout_keep_alive
        if not self._mf_reading:
            if not self._mf_idle():
                return  # the app holds a request, or uvicorn's keep-alive timer runs
            if now < idle_due:
                self._mf_arm(idle_due)
            elif self._mf_head_bytes:  # bytes that began no request (CRLFs)
                self._mf_timeout(
                    b"no byte of the request arrived for %d s; send the whole "
                    b"request" % self.timeout_keep_alive
                )
            else:  # nothing sent at all: closed like an idle keep-alive connection
                self.transport.close()
            return
        pending = self.cycle is not None and not self.cycle.response_complete
        if self.flow.read_paused or (pending and self._mf_in_head):
            # the server is not reading (a body the app has not consumed yet), or it still
            # owes a response (the client may be pipelining): the client is not slow
            self._mf_last = self._mf_begun = now
            self._mf_arm(now + self.timeout_keep_alive)
            return
        limit = self._mf_read_timeout or math.inf
        read_due = self._mf_begun + limit
        if now >= read_due:
            self._mf_timeout(
                b"the request (headers and body) did not arrive in full within %g s of its "
                b"first byte; send it at once" % limit
            )
        elif now >= idle_due:
            self._mf_timeout(
                b"no byte of the request arrived for %d s; send the whole request"
                % self.timeout_keep_alive
            )
        else:
            self._mf_arm(min(idle_due, read_due))

    def _mf_timeout(self, message: bytes) -> None:
        """408 and close; a request the app is reading sees its client leave."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not self._mf_in_head:
            if cycle.response_started:  # the app answered early (413): it only needs closing
                self.transport.close()
                return
            cycle.disconnected = True  # the app's receive() says http.disconnect
            cycle.message_event.set()
        self._refuse(408, b"Request Timeout", message)

    def _refuse(self, status: int, reason: bytes, message: bytes) -> None:
        """Answer and close without a reset: closing with unread input makes the kernel send
        RST, which can destroy the answer before the client reads it. So the write side is
        shut (FIN after the answer), input is read and dropped, and the socket closes when
        the client closes or after LINGER_S."""
        body = b'{"error":"%s"}' % message
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self._linger()

    def _linger(self) -> None:
        """Close after an answer without a reset (see :meth:`_refuse`)."""
        self._mf_refused = True
        transport = self.transport
        self.flow.resume_reading()  # uvicorn pauses reading a body the app has not read
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        else:  # TLS: no half-close
            transport.close()

    def eof_received(self) -> None:
        if self._mf_refused:
            self.transport.close()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._mf_in_head, self._mf_head_bytes, self._mf_reading = True, 0, False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._mf_reading = True
        self._mf_begun = self._mf_last
        limit = self._mf_read_timeout
        if limit and limit < self.timeout_keep_alive:  # the timer may be set for later
            due = self._mf_last + limit
            timer = self._mf_timer
            if timer is None or timer.when() > due:
                self._mf_arm(due)
        if not hasattr(self, "_mf_on_lost"):
            self._mf_on_lost = []
        extensions: Any = {DISCONNECT: self._mf_on_lost.append}
        self.scope["extensions"] = extensions

    def on_response_complete(self) -> None:
        self._mf_on_lost.clear()
        if not self._mf_refused:  # lingering: no pipelined request, no keep-alive timer
            super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._mf_timer is not None:
            self._mf_timer.cancel()
            self._mf_timer = None
        super().connection_lost(exc)
        callbacks = list(getattr(self, "_mf_on_lost", ()))
        self._mf_on_lost = []
        for callback in callbacks:
            callback()

    def shutdown(self) -> None:
        """uvicorn closes idle connections at shutdown and waits until they are lost. A TLS
        close waits for the client's close_notify, which an idle keep-alive client never
        sends (tritonclient.http's geventhttpclient does not read between requests): the
        server would wait out its whole grace period. So once a TLS connection is closing
        with nothing left to write, it is aborted."""
        super().shutdown()
        if self.transport.get_extra_info("sslcontext") is not None:
            self._mf_abort_tls()

    def _mf_abort_tls(self) -> None:
        t = self.transport
        if t.is_closing() and not t.get_write_buffer_size():
            t.abort()
        elif self.loop.is_running():  # an answer still in flight: look again soon
            self.loop.call_later(SHUTDOWN_POLL_S, self._mf_abort_tls)

    def send_400_response(self, msg: str) -> None:
        """httptools refused the request itself (request line, a header, Content-Length):
        answer in the API's JSON error shape, not uvicorn's plain text, and close."""
        if not self._mf_refused:
            self._refuse(
                400,
                b"Bad Request",
                b"malformed HTTP request (the request line, a header or Content-Length is not "
                b"valid HTTP/1.1); send a well-formed request",
            )

    def _close_after(self, cycle: Any) -> None:
        """A response said "connection: close". If the client is still sending this
        request's body (a 413 refused from Content-Length), closing now would reset the
        connection and destroy the answer for a client that sends its whole body before
        reading (http.client, requests): linger instead, like :meth:`_refuse`."""
        if cycle.more_body and not cycle.disconnected:
            self._linger()
        else:
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._mf_in_head, self._mf_head_bytes = False, 0
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not isinstance(cycle.transport, _Coalescing):
            wrapper = cycle.transport = _Coalescing(
                cycle.transport, lambda: self._close_after(cycle)
            )
            done = cycle.on_response

            def on_response() -> None:  # this cycle's own wrapper (pipelined cycles differ)
                wrapper.flush()  # HEAD: uvicorn writes no body, nothing released the header
                done()

            cycle.on_response = on_response
