"""How tcgraph runs uvicorn: its options, and the bounds it puts on slow clients.

uvicorn closes an idle keep-alive connection only once a response has been
sent (`timeout_keep_alive`), and restarts that timer on every byte received;
it has no bound on the time a client takes to send a request's headers, nor
on open connections (`limit_concurrency` answers requests with a plain-text
503 but accepts every connection). So a client that opens sockets and sends
nothing, or half a request line, holds them for ever.

The protocol here is uvicorn's httptools protocol with two bounds added
through the parser callbacks and the asyncio `Protocol` methods it already
has: a request's headers must arrive within `header_timeout_ms` of its first
byte (of the connection, for the first request), else the client gets a 408
and the connection is closed; and a connection beyond `max_connections` (per
server process) gets a 503 and is closed at once; a client that stops reading
an answer for `send_timeout_ms` is dropped. The body's deadline is
enforced in ASGI, where its reads happen (`api.middleware.BodyDeadline`).

uvicorn (through httptools) also buffers a request's head without bound:
the URL, and each header until it ends (by repeated concatenation, so a
long header costs time as well as memory). Here the head is bounded while
it arrives: a request target longer than `max_url_bytes` is answered 414,
header fields longer than `max_header_bytes` in all, or more than
`max_headers` of them, 431; the bytes received since the head began are
counted before they are parsed, so at most one read (256 KiB) past the
limits is ever held. After such a refusal the rest of what the client sends
is read and dropped (for `LINGER_S` at most) so that it receives the answer
instead of a reset. Every refusal carries a coded GraphQL error body.

uvicorn has no public hook for any of this (its `http` option takes a
protocol class, but what such a class may rely on is not documented), so
`BoundedProtocol` extends uvicorn's own httptools protocol. What it relies on
is listed in `UVICORN_INTERNALS`; pyproject.toml pins uvicorn to the minor
version they were checked against, and tests/test_http_server.py fails,
naming the internal, if any of them changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tcgraph import metrics
from tcgraph.config import Settings
from tcgraph.errors import LimitExceeded, error_body

log = logging.getLogger(__name__)

# Idle keep-alive connections are closed after this long. uvicorn's default
# (5 s) equals common clients' own idle expiry (httpx: 5 s), so a client could
# send a request on a connection at the very moment the server closes it; it
# must also outlast load balancers' idle timeouts (often 60 s), so that they,
# not tcgraph, close idle connections.
KEEP_ALIVE_S = 75
# After refusing a request, how long the rest of it is read and dropped before
# the connection is closed (a close with unread data would reset it, and the
# client might lose the answer).
LINGER_S = 5.0
# Each header field's ": " and CRLF, counted in its size.
_FRAMING_BYTES = 4
# The request line besides its target (method, version) and the head's final
# CRLF: allowed on top of max_header_bytes.
_REQUEST_LINE_BYTES = 64


# What BoundedProtocol uses of uvicorn's HttpToolsProtocol beyond asyncio's
# Protocol: the methods it overrides and calls (with their parameters), and the
# attributes it reads.
UVICORN_INTERNALS: dict[str, tuple[str, ...] | None] = {
    "__init__": ("self", "config", "server_state", "app_state", "_loop"),
    "data_received": ("self", "data"),
    "on_message_begin": ("self",),
    "on_url": ("self", "url"),
    "on_header": ("self", "name", "value"),
    "on_headers_complete": ("self",),
    "on_body": ("self", "body"),
    "on_message_complete": ("self",),
    "send_400_response": ("self", "msg"),
    "connection_made": ("self", "transport"),
    "connection_lost": ("self", "exc"),
    "pause_writing": ("self",),
    "resume_writing": ("self",),
    # attributes (None): set by __init__ or connection_made
    "server_state": None,
    "loop": None,
    "transport": None,
}


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds `BoundedProtocol` enforces (picklable: worker processes receive it)."""

    header_timeout_s: float
    max_connections: int
    send_timeout_s: float
    max_url_bytes: int
    max_header_bytes: int
    max_headers: int


def _raw_response(status: str, message: str, code: str, **details: object) -> bytes:
    body = error_body(message, code, **details)
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


@dataclass
class _Head:
    """What has arrived of the head of the request being read."""

    received: int = 0  # bytes since the head began, counted before parsing
    url_bytes: int = 0
    field_bytes: int = 0
    fields: int = 0
    complete: bool = False


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with bounds on the head, its deadline and connections."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_deadline: asyncio.TimerHandle | None = None
        self.send_deadline: asyncio.TimerHandle | None = None
        self.head = _Head()
        self.refused = False

    def data_received(self, data: bytes) -> None:
        if self.refused:  # the rest of a refused request: dropped unread
            return
        if not self.head.complete:
            self.head.received += len(data)
        super().data_received(data)
        if not self.refused and not self.head.complete:
            self._check_head()

    def on_url(self, url: bytes) -> None:
        self.head.url_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.fields += 1
        self.head.field_bytes += len(name) + len(value) + _FRAMING_BYTES
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        super().on_message_complete()
        self.head = _Head()  # what follows is the next request's head

    def send_400_response(self, msg: str) -> None:
        if not self.refused:  # after a refusal nothing else is answered
            super().send_400_response(msg)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.server_state.connections) > self.limits.max_connections:
            maximum = self.limits.max_connections
            log.warning("refused a connection: %d are open (max_connections)", maximum)
            self._refuse("503 Service Unavailable",
                         f"the server has {maximum} open connections, its limit "
                         f"(max_connections): try again later", "max_connections", maximum,
                         linger=False)  # one more socket held would defeat the limit
            return
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        self.head.complete = True
        self._check_head()
        if not self.refused:  # a refused request never reaches the app
            super().on_headers_complete()

    def _check_head(self) -> None:
        """Refuse the request if its head, complete or still arriving, is over a limit."""
        limits, head = self.limits, self.head
        if head.url_bytes > limits.max_url_bytes:
            self._refuse("414 URI Too Long",
                         f"the request target is longer than {limits.max_url_bytes} bytes "
                         f"(max_url_bytes)", "max_url_bytes", limits.max_url_bytes,
                         value=head.url_bytes)
        elif head.fields > limits.max_headers:
            self._refuse("431 Request Header Fields Too Large",
                         f"the request has more than {limits.max_headers} header fields "
                         f"(max_headers)", "max_headers", limits.max_headers, value=head.fields)
        elif head.field_bytes > limits.max_header_bytes or (
                # A field still arriving is held by the parser, uncounted: what
                # has arrived bounds it.
                not head.complete and head.received - head.url_bytes
                > limits.max_header_bytes + _REQUEST_LINE_BYTES):
            size = max(head.field_bytes, head.received - head.url_bytes - _REQUEST_LINE_BYTES)
            self._refuse("431 Request Header Fields Too Large",
                         f"the request's header fields are larger than "
                         f"{limits.max_header_bytes} bytes (max_header_bytes)",
                         "max_header_bytes", limits.max_header_bytes, value=size)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self.resume_writing()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        # The client stopped reading and the transport's buffer is full: it
        # must read again within `send_timeout_s`, or the connection is dropped
        # (closing would wait to send the buffer, so it is aborted).
        super().pause_writing()
        if self.send_deadline is None:
            self.send_deadline = self.loop.call_later(self.limits.send_timeout_s,
                                                      self._reads_too_slow)

    def resume_writing(self) -> None:
        if self.send_deadline is not None:
            self.send_deadline.cancel()
            self.send_deadline = None
        super().resume_writing()

    def _reads_too_slow(self) -> None:
        self.send_deadline = None
        log.warning("dropped a connection whose client read nothing for %g s (send_timeout_ms)",
                    self.limits.send_timeout_s)
        # A reset, not a close: a close would leave the kernel trying to
        # deliver its buffer to a client that does not read.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _arm_header_deadline(self) -> None:
        # Armed once per request: a client trickling bytes does not move it.
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(
                self.limits.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_too_slow(self) -> None:
        self.header_deadline = None
        timeout_ms = round(self.limits.header_timeout_s * 1000)
        self._refuse("408 Request Timeout",
                     f"the request's headers did not arrive within {timeout_ms} ms "
                     f"(header_timeout_ms)", "header_timeout_ms", timeout_ms)

    def _refuse(self, status: str, message: str, limit: str, maximum: int,
                value: int | None = None, linger: bool = True) -> None:
        """Answer `status` with a coded body and close the connection.

        With `linger`, a request still arriving is read and dropped meanwhile,
        for LINGER_S at most: closing with its bytes unread would reset the
        connection. Without, it is closed as soon as the answer is sent.
        """
        if self.transport.is_closing() or self.refused:
            return
        self.refused = True
        self._disarm_header_deadline()
        details: dict[str, object] = {"limit": limit, "maximum": maximum}
        if value is not None:
            details["value"] = value
        metrics.note_errors([{"code": LimitExceeded.code, **details}])
        self.transport.write(_raw_response(status, message, LimitExceeded.code, **details))
        if not linger:
            self.transport.close()
            return
        # Half-close: the answer and end of file go out, reading goes on.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options tcgraph gives `uvicorn.run` / `uvicorn.Config` besides the app and address."""
    limits = ConnectionLimits(header_timeout_s=settings.header_timeout_ms / 1000,
                              max_connections=settings.max_connections,
                              send_timeout_s=settings.send_timeout_ms / 1000,
                              max_url_bytes=settings.max_url_bytes,
                              max_header_bytes=settings.max_header_bytes,
                              max_headers=settings.max_headers)
    # A partial of a module-level class, so that `--workers N` can send it to
    # the worker processes.
    return {"http": functools.partial(BoundedProtocol, limits=limits),
            "timeout_keep_alive": KEEP_ALIVE_S,
            # A WebSocket message is a document, as a request body is.
            "ws_max_size": settings.max_body_bytes,
            "ws_per_message_deflate": settings.ws_compression}
