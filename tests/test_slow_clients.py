"""Slow and greedy clients over real sockets: the server closes what it will not wait for.

Each test waits for the server to act (an answer, then end of file) with a generous overall
timeout: it never measures how fast the server was.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from conftest import FilledDatabase
from servers import serving
from tcgraph.config import Settings
from tcgraph.http_server import uvicorn_options
from tcgraph.server import create_app
from waiting import eventually

# The longest a test waits for the server to answer or close; far above every bound set here.
PATIENCE_S = 60.0
REQUEST = b'POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
QUERY = b'{"query": "{ __typename }"}'


def start(filled_database: FilledDatabase, **limits: int) -> Iterator[tuple[str, int]]:
    with filled_database() as database_url:
        settings = Settings(database_url=database_url).with_(**limits)
        with serving(create_app(settings, database_url), **uvicorn_options(settings)) as base:
            host, port = base.removeprefix("http://").split(":")
            yield host, int(port)


@pytest.fixture(scope="module")
def impatient(filled_database: FilledDatabase) -> Iterator[tuple[str, int]]:
    """A server that waits 1 s for headers and 1 s for a body."""
    yield from start(filled_database, header_timeout_ms=1000, body_timeout_ms=1000)


@pytest.fixture(scope="module")
def crowded(filled_database: FilledDatabase) -> Iterator[tuple[str, int]]:
    """A server that takes 3 connections at most (and waits long for headers)."""
    yield from start(filled_database, max_connections=3, header_timeout_ms=600_000)


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=PATIENCE_S)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (PATIENCE_S at most)."""
    received = b""
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open; it sent {received!r}")


def refusal(answer: bytes, status: int, limit: str) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert b"connection: close" in head.lower(), answer
    error: dict[str, Any]
    (error,) = orjson.loads(body)["errors"]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED", error
    assert error["extensions"]["limit"] == limit, error
    assert limit in error["message"]
    return error


def answer_to(sock: socket.socket) -> bytes:
    """One complete answer to a request already sent (its body is JSON with a length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, received
        body += chunk
    return head + b"\r\n\r\n" + body


def dropped(sock: socket.socket) -> bool:
    """Whether the connection has a pending error: the server reset it."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0


def ask(sock: socket.socket) -> bytes:
    sock.sendall(REQUEST + b"Content-Length: %d\r\n\r\n" % len(QUERY) + QUERY)
    return answer_to(sock)


def test_a_connection_that_sends_nothing_is_closed(impatient: tuple[str, int]) -> None:
    with connect(impatient) as sock:
        error = refusal(until_closed(sock), 408, "header_timeout_ms")
    assert error["extensions"]["maximum"] == 1000


def test_half_the_headers_is_closed(impatient: tuple[str, int]) -> None:
    with connect(impatient) as sock:
        sock.sendall(REQUEST + b"Content-Le")
        refusal(until_closed(sock), 408, "header_timeout_ms")


def test_headers_trickled_byte_by_byte_are_cut_off(impatient: tuple[str, int]) -> None:
    """Every byte would restart an idle timer: the deadline runs from the first byte."""
    trickle = REQUEST + b"X-Padding: " + b"a" * 100_000
    with connect(impatient) as sock:
        sent = 0
        deadline = time.monotonic() + PATIENCE_S
        try:
            while sent < len(trickle):
                assert time.monotonic() < deadline, "the server never cut the trickle off"
                sock.sendall(trickle[sent:sent + 1])
                sent += 1
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed under us, as it should be
        assert sent < len(trickle)
        refusal(until_closed(sock), 408, "header_timeout_ms")


def test_half_the_body_is_refused_and_closed(impatient: tuple[str, int]) -> None:
    with connect(impatient) as sock:
        sock.sendall(REQUEST + b"Content-Length: 100\r\n\r\n" + QUERY[:10])
        refusal(until_closed(sock), 408, "body_timeout_ms")


def test_half_a_rest_body_is_refused_in_taskclusters_shape(impatient: tuple[str, int]) -> None:
    with connect(impatient) as sock:
        sock.sendall(b"POST /api/queue/v1/tasks/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        head, _, body = until_closed(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower(), head
    answer = orjson.loads(body)
    assert answer["code"] == "RequestTimeout", answer
    assert "body_timeout_ms" in answer["message"]


def test_a_keep_alive_connection_gets_the_same_header_deadline_per_request(
        impatient: tuple[str, int]) -> None:
    with connect(impatient) as sock:
        for _ in range(3):
            assert ask(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHo")
        refusal(until_closed(sock), 408, "header_timeout_ms")


def test_a_client_that_stops_reading_is_dropped(filled_database: FilledDatabase) -> None:
    """An answer of several megabytes to a client with a tiny receive buffer that never reads."""
    ids = [f"no-such-task-{n}" for n in range(10_000)]
    aliases = " ".join(f"a{n}: statuses(taskIds: $ids) {{ taskId }}" for n in range(60))
    request = orjson.dumps({"query": f"query ($ids: [ID!]!) {{ {aliases} }}",
                            "variables": {"ids": ids}})
    for address in start(filled_database, send_timeout_ms=1000, max_cost=1_000_000):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(PATIENCE_S)
        sock.connect(address)
        with sock:
            sock.sendall(REQUEST + b"Content-Length: %d\r\n\r\n" % len(request) + request)
            # Read nothing: the server's buffers fill, then it must drop the connection,
            # which the client sees as a reset once it reads again.
            eventually(functools.partial(dropped, sock),
                       what="the server to drop a stalled client", timeout=PATIENCE_S)


def test_connections_beyond_the_limit_are_refused_and_served_again_once_freed(
        crowded: tuple[str, int]) -> None:
    held = [connect(crowded) for _ in range(3)]
    try:
        for sock in held:  # each answered, so the server holds all three (keep-alive)
            assert ask(sock).startswith(b"HTTP/1.1 200 ")
        with connect(crowded) as extra:
            error = refusal(until_closed(extra), 503, "max_connections")
        assert error["extensions"]["maximum"] == 3
        held.pop().close()

        def served_again() -> bool:
            with connect(crowded) as again:
                return ask(again).startswith(b"HTTP/1.1 200 ")

        # The server learns of the close on its own time: poll for it.
        eventually(served_again, what="a freed connection slot to be reused",
                   timeout=PATIENCE_S, interval=0.05,
                   ignoring=(AssertionError, ConnectionResetError))
    finally:
        for sock in held:
            sock.close()
