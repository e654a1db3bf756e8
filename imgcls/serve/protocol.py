"""The HTTP connection layer: uvicorn's httptools protocol with the bounds a server facing strangers needs.

uvicorn itself bounds neither the request head nor the time a client may take to send it: httptools
concatenates header chunks for as long as they come (a 48 MB header value took 2 s of event-loop time), a
connection that never sends a byte stays open forever, and ``limit_concurrency`` answers plain text. Here,
per connection:

* the request head (request line + headers) is fed to the parser at most ``max_header_bytes`` at a time;
  a head that has not ended by then gets a JSON 431 and the connection is closed;
* the head must arrive within ``read_timeout_s`` of the connection opening (or of the first byte of the next
  request on a kept-alive connection): a silent connection is closed, a half-sent head gets a JSON 408;
* a chunked body's trailer section (after its last chunk) is bounded the same way: more than
  ``max_header_bytes`` fed since the body's last byte gets a JSON 431 and the connection is closed;
* a client that stops reading its answers (the write buffer full) has ``read_timeout_s`` to read again, then the
  connection is aborted: it held its connection slot, and the answers in memory, for as long as it liked;
* beyond ``max_connections`` open connections, a new one is answered a JSON 503 (``Retry-After``) and closed;
* bytes httptools cannot parse (``Content-Length`` with ``Transfer-Encoding``, two ``Content-Length``, a bad
  chunk size, an unknown method, a control character in a header) get a JSON 400 naming the parser's reason,
  not uvicorn's plain-text ``Invalid HTTP request received.``;
* a response's head is written together with its first body message (:class:`CorkedCycle`): one socket write
  per answer instead of two, so the event loop releases the GIL (and wakes the client) once.

The body's deadline is the gateway's (:class:`imgcls.serve.gateway.Gateway`): it reads the body under the
same ``read_timeout_s`` before any route runs. Idle keep-alive connections are closed by uvicorn after
``timeout_keep_alive`` (:mod:`imgcls.serve.runner` sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from imgcls.serve.settings import ServeSettings

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost the server."""

    max_header_bytes: int
    read_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ConnectionLimits:
        return cls(settings.max_header_bytes, settings.read_timeout_s, settings.max_connections)


def error_bytes(
    status: int, code: str, message: str, extra: tuple[tuple[str, str], ...] = (), *, hint: str | None = None
) -> bytes:
    """A complete JSON error response that closes the connection (written straight to the transport)."""
    error = {"code": code, "message": message, **({"hint": hint} if hint else {})}
    body = json.dumps({"error": error}).encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json"]
    head += [f"content-length: {len(body)}", "connection: close", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps(
        {"error": {"code": "too_many_connections", "message": "the server has too many open connections; retry"}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Held:
    """Stands in for the transport while uvicorn writes one ASGI message: keeps what it writes, and a close."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def close(self) -> None:
        self.closed = True


class CorkedCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing the response head with the first body message.

    uvicorn writes the status line and headers as soon as ``http.response.start`` is sent, then each body
    message: two ``send()`` syscalls for a one-message answer, each releasing the GIL. Here the head bytes
    uvicorn produces are held and written in the same ``transport.write`` as the first body message (or just
    before any other message). Every byte and check is uvicorn's own; only the number of writes changes.
    """

    _head: bytes | None = None

    def body_complete(self) -> bool:
        """The parser has seen the whole request body and it is buffered here: ``receive()`` will not wait.

        The gateway then reads the body without arming its read deadline (a timer per request).
        """
        return not self.more_body and self.message_event.is_set() and not self.disconnected

    async def send(self, message: Any) -> None:
        if not self.response_started and message.get("type") == "http.response.start":
            transport, held = self.transport, _Held()
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._head = b"".join(held.chunks) or None
            return
        head, self._head = self._head, None
        if head is None:
            await super().send(message)
            return
        if self.disconnected:  # uvicorn drops what is sent to a gone client: the head too
            await super().send(message)
            return
        if message.get("type") != "http.response.body":
            self.transport.write(head)
            await super().send(message)
            return
        transport, held = self.transport, _Held()
        self.transport = held  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
            transport.write(head + b"".join(held.chunks))
            if held.closed:
                transport.close()


class GuardedProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a bounded head, a head deadline and a connection cap (module docstring)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._heads = 0  # request heads parsed on this connection
        self._chunked = False  # the body being read is chunked (it may end in a trailer section)
        self._body_bytes = 0  # body bytes parsed on this connection
        self._since_body = 0  # bytes of a chunked body fed since its last body byte (framing, trailers)
        # Told (status, code) of each error this layer answers itself (the app never sees those requests): the app's
        # ``on_connection_error`` (ServerApp: metrics and W&B), found on the app each worker loaded
        self._on_error: Callable[[int, str], None] | None = getattr(self.app, "on_connection_error", None)

    @classmethod
    def for_settings(cls, settings: ServeSettings) -> type[GuardedProtocol]:
        """A protocol class bound to ``settings`` (one per server)."""
        return type("GuardedProtocol", (cls,), {"limits": ConnectionLimits.from_settings(settings)})

    def _report(self, status: int, code: str) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):  # monitoring must never break a connection
                self._on_error(status, code)

    # --- connection ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.app = self._refuse  # answered once its head is parsed, then closed
        self._arm_head_timer()

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        """The answer of a connection beyond the cap, reported when it is given (a client that sends no request
        is closed by the head deadline, answered nothing)."""
        self._report(503, "too_many_connections")
        await _too_many_connections(scope, receive, send)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The write buffer is full: the client has ``read_timeout_s`` to read before the connection is aborted.

        No other deadline ran while uvicorn waited for the buffer to drain: a few clients that pipelined requests
        and never read the answers held their connection slots for good (beyond ``max_connections``, every other
        client got 503).
        """
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.read_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self._report(408, "write_timeout")
        self.transport.abort()  # nothing more can be written to it, an error answer neither

    def _unsupported_upgrade_warning(self) -> None:
        """An ``Upgrade`` header is ignored (RFC 9110 lets a server): the request is answered as HTTP/1.1, and the
        log gets no "No supported WebSocket library detected" per such request (the server has no WebSocket route,
        :func:`imgcls.serve.runner._config` turns uvicorn's off)."""

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol.eof_received: True keeps it open
        """The client half-closed after its request (``shutdown(SHUT_WR)``, ``nc -N``): answer it, then close.

        uvicorn returns None here, so asyncio closed the transport at once and a complete request from such a
        client got no answer at all. The last request parsed is answered (with those pipelined before it) and its
        answer closes the connection; a request whose head or body is incomplete can never complete, and closes as
        before.
        """
        last = self.cycle
        if last is None or last.response_complete or last.more_body or self._head_bytes:
            return None
        last.keep_alive = False
        return True

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.read_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes:
            limit = self.limits.read_timeout_s
            self._close_with(408, "read_timeout", f"the request head did not arrive within {limit:g} s")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _close_with(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        self._report(status, code)
        self.transport.write(error_bytes(status, code, message, hint=hint))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes httptools refuses, as the JSON error every other answer is.

        uvicorn calls this inside its ``except httptools.HttpParserError``: the parser's reason ("Transfer-Encoding
        can't be present with Content-Length", "Invalid method encountered") is the exception being handled. A
        client (or a proxy in front) that sent it needs that reason; uvicorn answered ``text/plain`` "Invalid HTTP
        request received." to all of them.
        """
        exc = sys.exception()
        if isinstance(exc, httptools.HttpParserCallbackError):  # raised in uvicorn's callback: that one says why
            cause = exc.__cause__ or exc.__context__  # e.g. 'CONNECT host:443': "invalid url b'host:443'"
            exc = cause if isinstance(cause, httptools.HttpParserError) else None
        reason = str(exc) if exc is not None and str(exc) else "the request line or a header cannot be read"
        self._close_with(
            400,
            "invalid_http",
            f"the request is not valid HTTP/1.1: {reason[:200]}",
            hint="send one Content-Length or Transfer-Encoding: chunked (not both), a standard method, and no "
            "control characters in the URL or the headers",
        )

    # --- parsing ---------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        while self._in_head:
            if self._head_bytes == 0 and self._head_timer is None:
                self._arm_head_timer()  # the first byte of a request on a kept-alive connection
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # feed what fits; if no head has ended inside it, the rest is never parsed (httptools would
            # otherwise concatenate an unbounded header value)
            self._head_bytes += room
            heads = self._heads
            if room > 0:
                super().data_received(data[:room])
            if self.transport.is_closing():
                return
            if self._in_head and self._heads == heads:
                limit = self.limits.max_header_bytes
                self._close_with(431, "headers_too_large", f"the request head is larger than {limit:,} bytes")
                return
            # A head ended inside what was fed: pipelined requests (small heads, many of them in one read) go on
            # from there. The bytes of the next head already fed were not counted, so one head may reach twice
            # the limit, never more; every pipelined read over the limit used to be a 431 with no answer at all.
            data = data[room:]
        if data and self._chunked:
            self._feed_chunked(data)
        elif data:
            super().data_received(data)

    def _feed_chunked(self, data: bytes) -> None:
        """A chunked body, fed ``max_header_bytes`` at a time: once more than that has been fed since its last body
        byte (a trailer section after the last chunk: httptools concatenates a trailer value as it does a header's,
        and a 120 MB one held the event loop for seconds), the request gets a JSON 431 and is closed."""
        limit = self.limits.max_header_bytes
        while data:
            piece, data = data[:limit], data[limit:]
            before = self._body_bytes
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if self._in_head:  # the message ended inside the piece (and a pipelined head may have begun in it)
                self._chunked = False
                if data:
                    self.data_received(data)
                return
            self._since_body = 0 if self._body_bytes > before else self._since_body + len(piece)
            if self._since_body > limit:
                self._close_with(
                    431, "headers_too_large", f"the request's trailer section is larger than {limit:,} bytes"
                )
                return

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._chunked = any(n == b"transfer-encoding" and b"chunked" in v.lower() for n, v in self.headers)
        self._since_body = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # before its task first runs: the app gets the corked send
            self.cycle.__class__ = CorkedCycle

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0


class EnvProtocol(GuardedProtocol):
    """``--workers N``: each worker process binds the limits from ``IMGCLS_SERVE_SETTINGS`` on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "limits" not in EnvProtocol.__dict__:
            from imgcls.serve.settings import settings_from_env

            EnvProtocol.limits = ConnectionLimits.from_settings(settings_from_env())
        super().__init__(*args, **kwargs)
