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
Every refusal carries a coded GraphQL error body.
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

from tcgraph.config import Settings
from tcgraph.errors import LimitExceeded, error_body

log = logging.getLogger(__name__)

# Idle keep-alive connections are closed after this long. uvicorn's default
# (5 s) equals common clients' own idle expiry (httpx: 5 s), so a client could
# send a request on a connection at the very moment the server closes it; it
# must also outlast load balancers' idle timeouts (often 60 s), so that they,
# not tcgraph, close idle connections.
KEEP_ALIVE_S = 75


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds `BoundedProtocol` enforces (picklable: worker processes receive it)."""

    header_timeout_s: float
    max_connections: int
    send_timeout_s: float


def _raw_response(status: str, message: str, code: str, **details: object) -> bytes:
    body = error_body(message, code, **details)
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a header deadline and a connection limit."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_deadline: asyncio.TimerHandle | None = None
        self.send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.server_state.connections) > self.limits.max_connections:
            maximum = self.limits.max_connections
            log.warning("refused a connection: %d are open (max_connections)", maximum)
            self._refuse("503 Service Unavailable",
                         f"the server has {maximum} open connections, its limit "
                         f"(max_connections): try again later", "max_connections", maximum)
            return
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

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

    def _refuse(self, status: str, message: str, limit: str, maximum: int) -> None:
        """Answer `status` with a coded body and close the connection."""
        if self.transport.is_closing():
            return
        self.transport.write(_raw_response(status, message, LimitExceeded.code, limit=limit,
                                           maximum=maximum))
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options tcgraph gives `uvicorn.run` / `uvicorn.Config` besides the app and address."""
    limits = ConnectionLimits(header_timeout_s=settings.header_timeout_ms / 1000,
                              max_connections=settings.max_connections,
                              send_timeout_s=settings.send_timeout_ms / 1000)
    # A partial of a module-level class, so that `--workers N` can send it to
    # the worker processes.
    return {"http": functools.partial(BoundedProtocol, limits=limits),
            "timeout_keep_alive": KEEP_ALIVE_S}
