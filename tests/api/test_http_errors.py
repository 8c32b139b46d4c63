"""Requests refused before any GraphQL runs: every one answered with a coded GraphQL error body.

Spoken over one raw keep-alive socket to a real server, so that a refusal that broke the
connection (as an unhandled exception does) shows as the next request going unanswered.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest

from conftest import FilledDatabase
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app

# How long a test waits for any one answer before calling the server stuck.
ANSWER_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def address(filled_database: FilledDatabase) -> Iterator[tuple[str, int]]:
    with (filled_database() as database_url,
          serving(create_app(Settings(database_url=database_url), database_url)) as base):
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


class Connection:
    """One HTTP/1.1 connection, requests sent and answers read in turn."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=ANSWER_TIMEOUT_S)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"",
                content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        raw_head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._read()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, answer

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connection(address: tuple[str, int]) -> Iterator[Connection]:
    conn = Connection(address)
    yield conn
    conn.close()


def assert_coded(status: int, headers: dict[str, str], body: bytes, expected_status: int,
                 code: str, words: str) -> None:
    assert status == expected_status, body
    assert headers["content-type"].startswith("application/json"), headers
    assert headers.get("connection", "keep-alive") != "close", headers
    (error,) = orjson.loads(body)["errors"]
    assert error["extensions"]["code"] == code, error
    assert words in error["message"], error


def assert_still_serving(connection: Connection) -> None:
    status, _, body = connection.request("POST", "/graphql", b'{"query": "{ __typename }"}')
    assert status == 200 and orjson.loads(body)["data"] == {"__typename": "Query"}


@pytest.mark.parametrize("body, kind", [
    (b"null", "null"), (b"42", "number"), (b'"x"', "string"), (b"true", "boolean"),
    (b"1.5", "number"),
])
def test_a_json_body_that_is_not_an_object_is_a_coded_400(connection: Connection, body: bytes,
                                                          kind: str) -> None:
    for _ in range(2):  # twice on the same connection: it stays open
        assert_coded(*connection.request("POST", "/graphql", body), 400, "BAD_REQUEST",
                     f"expected a JSON object (a request with `query`, or `variables`), "
                     f"got a JSON {kind}")
    assert_still_serving(connection)


@pytest.mark.parametrize("method, body, content_type, words", [
    ("POST", b'{"query": "query A { __typename }", "operationName": "B"}', "application/json",
     'Unknown operation named "B"'),
    ("POST", b'[{"query": "{ __typename }"}]', "application/json", "Batching is not enabled"),
    ("POST", b"{ __typename }", "text/plain", "Unsupported content type"),
    ("POST", b'{"query": 42}', "application/json", "`query` must be a string"),
    ("POST", b'{"query": "{ __typename }", "variables": [1]}', "application/json",
     "`variables` must be an object"),
    ("POST", b"{", "application/json", "Unable to parse request body as JSON"),
    ("POST", b"{}", "application/json", "No GraphQL query found"),
    ("GET", b"", "application/json", "No GraphQL query found"),
])
def test_strawberrys_own_refusals_are_coded_graphql_errors(
        connection: Connection, method: str, body: bytes, content_type: str,
        words: str) -> None:
    assert_coded(*connection.request(method, "/graphql", body, content_type), 400,
                 "BAD_REQUEST", words)
    assert_still_serving(connection)


@pytest.mark.parametrize("variables, words", [
    ("42", "expected a JSON object"), ("[1]", "`variables` must be an object"),
    ("%7B", "Unable to parse request body as JSON"),
])
def test_get_variables_that_are_not_an_object_are_coded_400s(
        connection: Connection, variables: str, words: str) -> None:
    assert_coded(*connection.request(
        "GET", f"/graphql?query=%7B__typename%7D&variables={variables}"), 400, "BAD_REQUEST", words)
    assert_still_serving(connection)


def test_a_mutation_over_get_is_a_coded_refusal(connection: Connection) -> None:
    status, headers, body = connection.request(
        "GET", "/graphql?query=mutation%20%7B%20__typename%20%7D")
    assert status in (400, 405), body
    error, = orjson.loads(body)["errors"]
    assert error["extensions"]["code"], error
    assert_still_serving(connection)


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/no/such/page", 404, "NOT_FOUND"),
    ("PUT", "/graphql", 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", "/health/live", 405, "METHOD_NOT_ALLOWED"),
])
def test_routing_refusals_outside_the_rest_api_are_coded(
        connection: Connection, method: str, path: str, status: int, code: str) -> None:
    assert_coded(*connection.request(method, path), status, code, path)
    assert_still_serving(connection)


@pytest.mark.parametrize("token", ["00", "610062", "ff", "bogus"])
def test_forged_rest_continuation_tokens_are_the_first_page_as_in_taskcluster(
        connection: Connection, token: str) -> None:
    """A NUL once reached PostgreSQL as a key (an InputValidationError naming the driver)."""
    first = connection.request("GET", "/api/index/v1/namespaces/gecko")
    forged = connection.request("GET", f"/api/index/v1/namespaces/gecko?continuationToken={token}")
    assert forged[0] == 200, forged[2]
    assert orjson.loads(forged[2]) == orjson.loads(first[2])


def test_a_chunked_rest_body_over_the_limit_is_413_not_an_incident(
        connection: Connection) -> None:
    """No Content-Length to refuse up front: the limit trips while the handler reads."""
    chunk = b"[" + b'"x",' * 1_100_000  # over the default 4,000,000 bytes
    connection.sock.sendall(
        b"POST /api/queue/v1/tasks/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
    while b"\r\n\r\n" not in connection.buffer:
        connection._read()
    head = connection.buffer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 413 "), head
