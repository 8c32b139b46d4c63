"""ASGI middleware around every route: request ids, allowed hosts, the body's size and deadline."""

from __future__ import annotations

import asyncio
import uuid

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tcgraph import metrics
from tcgraph.api.rest.errors import API_PREFIX, refusal_body, too_large_body
from tcgraph.errors import LimitExceeded, RequestRefused, error_body
from tcgraph.logs import request_id

REQUEST_ID_HEADER = "x-request-id"

def _valid_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()


class RequestId:
    """Give every request an id (the caller's `X-Request-Id`, or a new one) and echo it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = given if _valid_id(given) else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (REQUEST_ID_HEADER.encode(), rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class AllowedHosts:
    """Answer only requests whose `Host` is allowed; refuse the rest with a coded 400.

    The matching is Starlette's TrustedHostMiddleware's (exact names, `*.domain`,
    `*`); its plain-text refusal is replaced by tcgraph's error bodies. Without
    it, URLs tcgraph builds from the request (the references) would name
    whatever host a client sent, and a cache in front would serve them to all.
    `any_host_paths` build no URL and answer any `Host` (probes often send an IP).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str],
                 any_host_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.any_host_paths = any_host_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.any_host_paths:
            await self.app(scope, receive, send)
            return
        admitted = False

        async def admit(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal admitted
            admitted = True
            await self.app(scope, receive, send)

        async def send_if_admitted(message: Message) -> None:
            if admitted:  # the refusal TrustedHostMiddleware would send is dropped
                await send(message)

        check = TrustedHostMiddleware(admit, allowed_hosts=self.allowed_hosts, www_redirect=False)
        await check(scope, receive, send_if_admitted)
        if not admitted:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        message = (f"the Host {host!r} is not served here; allowed: "
                   f"{', '.join(self.allowed_hosts)} (allowed_hosts)")
        metrics.note_errors([{"code": "HOST_NOT_ALLOWED"}])
        if scope["path"].startswith(API_PREFIX):
            body = refusal_body(scope, "InputError", message)
        else:
            body = error_body(message, "HOST_NOT_ALLOWED", host=host)
        await _send_json(send, 400, body)


class _BodyTooSlow(RequestRefused):
    pass


class BodyDeadline:
    """Refuse a request whose body does not arrive within `timeout_s` of the first read: 408.

    The clock starts when the app first asks for the body (the headers are in by
    then) and stops once the last part has arrived. The refusal says
    `connection: close`: the rest of a late body is not worth waiting for.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:  # after the body: waiting for a disconnect, unbounded
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except _BodyTooSlow:
            if started:
                raise
            timeout_ms = round(self.timeout_s * 1000)
            metrics.note_errors([{"code": LimitExceeded.code, "limit": "body_timeout_ms"}])
            message = (f"the request's body did not arrive within {timeout_ms} ms "
                       f"(body_timeout_ms)")
            if scope["path"].startswith(API_PREFIX):
                body = refusal_body(scope, "RequestTimeout", message)
            else:
                body = error_body(message, LimitExceeded.code, limit="body_timeout_ms",
                                  maximum=timeout_ms)
            await _send_json(send, 408, body, close=True)


class _TooLarge(RequestRefused):
    pass


class BodyLimit:
    """Refuse request bodies over `max_bytes` with a 413, before anything parses them.

    Both a declared Content-Length and the bytes actually received count, so
    a chunked body cannot slip past the limit; so does the query string (a
    GET document), so the limit is one for a document however it is sent.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A GET document travels in the query string: it counts as body does.
        received = len(scope.get("query_string", b""))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() \
                and received + int(declared) > self.max_bytes:
            await self._refuse(scope, send, received + int(declared))
            return
        if received > self.max_bytes:
            await self._refuse(scope, send, received)
            return
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send, received)

    async def _refuse(self, scope: Scope, send: Send, size: int) -> None:
        extensions = {"code": "LIMIT_EXCEEDED", "limit": "max_body_bytes", "value": size,
                      "maximum": self.max_bytes}
        metrics.note_errors([extensions])
        if scope["path"].startswith(API_PREFIX):
            await _send_json(send, 413, too_large_body(scope, size, self.max_bytes))
            return
        message = (f"the request body (with its query string) is larger than the limit of "
                   f"{self.max_bytes} bytes (max_body_bytes)")
        body = error_body(message, LimitExceeded.code, limit="max_body_bytes", value=size,
                          maximum=self.max_bytes)
        await _send_json(send, 413, body)


async def _send_json(send: Send, status: int, body: bytes, close: bool = False) -> None:
    """An answer with a JSON body; `close`: and the connection is closed after it."""
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
