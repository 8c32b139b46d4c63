"""http_server.py: a request's head is bounded while it arrives (URL, header bytes, header count).

Real sockets against real servers on 127.0.0.1. Each test waits for the server to act (an
answer, end of file) with a generous overall timeout: none measures how fast it was.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import Iterator

import httpx
import orjson
import psutil
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from conftest import FilledDatabase
from servers import serve_process
from test_slow_clients import PATIENCE_S, answer_to, connect, refusal, start, until_closed
from tcgraph.config import Settings
from tcgraph.http_server import UVICORN_INTERNALS, uvicorn_options

HEAD = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
LIMITS = Settings()


@pytest.fixture(scope="module")
def bounded(filled_database: FilledDatabase) -> Iterator[tuple[str, int]]:
    """A server with the default head limits and a small body limit."""
    yield from start(filled_database, max_body_bytes=10_000)


def stream(sock: socket.socket, start: bytes, filler: int) -> threading.Thread:
    """Send `start`, then `filler` bytes of one endless header, in a thread; stop when cut off."""
    def send() -> None:
        try:
            sock.sendall(start)
            for _ in range(filler // 65536):
                sock.sendall(b"a" * 65536)
        except OSError:  # reset or closed under us: the server gave up on the request
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_one_huge_header_is_refused_431_while_it_arrives(bounded: tuple[str, int]) -> None:
    with connect(bounded) as sock:
        sender = stream(sock, HEAD + b"X-Huge: ", 16 * 1024 * 1024)
        error = refusal(until_closed(sock), 431, "max_header_bytes")
        sender.join(PATIENCE_S)
    assert error["extensions"]["maximum"] == LIMITS.max_header_bytes
    # Refused within one read (256 KiB) of the limit, not after 16 MiB.
    assert error["extensions"]["value"] < LIMITS.max_header_bytes + 300_000


def test_a_complete_head_with_large_fields_is_refused_431(bounded: tuple[str, int]) -> None:
    fields = b"".join(b"X-Field-%d: %s\r\n" % (n, b"v" * 1000) for n in range(40))
    with connect(bounded) as sock:
        sock.sendall(HEAD + fields + b"\r\n")
        error = refusal(until_closed(sock), 431, "max_header_bytes")
    assert error["extensions"]["value"] > LIMITS.max_header_bytes


def test_too_many_header_fields_are_refused_431(bounded: tuple[str, int]) -> None:
    fields = b"".join(b"X-F%d: 1\r\n" % n for n in range(LIMITS.max_headers + 1))
    with connect(bounded) as sock:
        sock.sendall(HEAD + fields + b"\r\n")
        error = refusal(until_closed(sock), 431, "max_headers")
    assert error["extensions"]["maximum"] == LIMITS.max_headers


def test_a_long_url_is_refused_414(bounded: tuple[str, int]) -> None:
    target = b"/graphql?query=" + b"%20" * (LIMITS.max_url_bytes // 3 + 1)
    with connect(bounded) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        error = refusal(until_closed(sock), 414, "max_url_bytes")
    assert error["extensions"]["value"] > LIMITS.max_url_bytes


def test_a_url_still_arriving_is_cut_off_414(bounded: tuple[str, int]) -> None:
    with connect(bounded) as sock:
        sender = stream(sock, b"GET /graphql?query=", 16 * 1024 * 1024)
        refusal(until_closed(sock), 414, "max_url_bytes")
        sender.join(PATIENCE_S)


def test_a_get_document_counts_against_max_body_bytes(bounded: tuple[str, int]) -> None:
    # Under the URL limit, over the body limit (10,000 bytes here): the same 413 as a body.
    document = b"{" + b"%20" * 4000 + b"__typename}"
    with connect(bounded) as sock:
        sock.sendall(b"GET /graphql?query=" + document + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Accept: application/json\r\n\r\n")
        head, _, body = answer_to(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    (error,) = orjson.loads(body)["errors"]
    assert (error["extensions"]["code"], error["extensions"]["limit"]) == (
        "LIMIT_EXCEEDED", "max_body_bytes")
    assert error["extensions"]["value"] > 10_000


def test_heads_within_the_limits_are_served(bounded: tuple[str, int]) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (n, b"v" * 200) for n in range(LIMITS.max_headers - 2))
    with connect(bounded) as sock:
        sock.sendall(HEAD + fields + b"\r\n")
        assert answer_to(sock).startswith(b"HTTP/1.1 200 ")
        # The connection is still good for another request.
        sock.sendall(HEAD + b"\r\n")
        assert answer_to(sock).startswith(b"HTTP/1.1 200 ")


def listening_process(port: int) -> psutil.Process:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError(f"nothing listens on port {port}")


def test_huge_headers_on_four_sockets_neither_grow_the_server_nor_hold_health(
        database_url: str) -> None:
    with serve_process("--database-url", database_url) as served:
        server = listening_process(served.port)
        address = ("127.0.0.1", served.port)
        with httpx.Client(base_url=served.url) as http:
            assert http.get("/health/live").status_code == 200
            before = server.memory_info().rss
            socks = [connect(address) for _ in range(4)]
            try:
                senders = [stream(s, HEAD + b"X-Huge: ", 64 * 1024 * 1024) for s in socks]
                for sock in socks:  # each refused while its sender is still sending
                    refusal(answer_to(sock), 431, "max_header_bytes")
                # The sockets are open, their clients still sending: health answers.
                assert http.get("/health/live", timeout=PATIENCE_S).status_code == 200
                grown = server.memory_info().rss - before
            finally:
                for sock in socks:
                    sock.close()
            for sender in senders:
                sender.join(PATIENCE_S)
    assert served.returncode == 0, served.stderr
    assert grown < 32 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"


def test_the_uvicorn_internals_bounded_protocol_relies_on_are_unchanged() -> None:
    """BoundedProtocol extends uvicorn's httptools protocol: if uvicorn changes what it relies
    on, this says which internal changed (then check http_server.py and the pin in
    pyproject.toml)."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # never called
        raise AssertionError

    options = uvicorn_options(LIMITS)
    loop = asyncio.new_event_loop()
    try:
        protocol = options["http"](config=uvicorn.Config(app, **options),
                                   server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    changed = []
    for name, parameters in UVICORN_INTERNALS.items():
        if parameters is None:
            if name not in vars(protocol):
                changed.append(f"the attribute HttpToolsProtocol.{name} is gone")
            continue
        method = getattr(HttpToolsProtocol, name, None)
        if method is None:
            changed.append(f"HttpToolsProtocol.{name} is gone")
        elif tuple(inspect.signature(method).parameters) != parameters:
            changed.append(f"HttpToolsProtocol.{name} now takes "
                           f"{tuple(inspect.signature(method).parameters)}, not {parameters}")
    assert not changed, (f"uvicorn {uvicorn.__version__} changed internals that "
                         f"tcgraph.http_server.BoundedProtocol relies on: {'; '.join(changed)}")
