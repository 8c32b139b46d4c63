"""tests/ports.py: ports handed over bound; starts retried when a service finds its port taken."""

from __future__ import annotations

import os
import socket

import pytest

from ports import (
    HOST,
    PortTaken,
    listening_socket,
    listens_on,
    on_free_ports,
    refusing_port,
    says_port_taken,
)


def test_a_listening_socket_accepts_and_is_seen_as_ours() -> None:
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        assert listens_on(os.getpid(), port)
        with socket.create_connection((HOST, port), timeout=5):
            accepted, _ = sock.accept()
            accepted.close()
    assert not listens_on(os.getpid(), port)


def test_a_refusing_port_refuses_and_cannot_be_taken_meanwhile() -> None:
    with refusing_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=5)
        with socket.socket() as other, pytest.raises(OSError) as raised:
            other.bind((HOST, port))
        assert says_port_taken(str(raised.value))


def test_a_start_that_finds_its_port_taken_runs_again_on_new_ports() -> None:
    seen: list[tuple[int, ...]] = []

    def start(*ports: int) -> tuple[int, ...]:
        seen.append(ports)
        if len(seen) < 3:
            raise PortTaken("bind: Address already in use")
        return ports

    assert on_free_ports(start, count=3) == seen[-1]
    assert len(seen) == 3 and all(len(set(p)) == 3 for p in seen)


def test_a_port_taken_every_time_fails_after_the_attempts() -> None:
    def start(port: int) -> None:
        raise PortTaken(str(port))

    with pytest.raises(AssertionError, match="each of 2 starts found a port taken"):
        on_free_ports(start, attempts=2)


def test_other_start_errors_are_not_retried() -> None:
    calls = []

    def start(port: int) -> None:
        calls.append(port)
        raise RuntimeError("the program crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        on_free_ports(start)
    assert len(calls) == 1


@pytest.mark.parametrize("output", [
    "ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): "
    "address already in use",  # uvicorn
    'LOG:  could not bind IPv4 address "127.0.0.1": Address already in use',  # PostgreSQL
    "reason: {dist_port_already_used,41719,not_erlang,\"localhost\"}",  # RabbitMQ
    "failed to start listener: eaddrinuse",
])
def test_services_saying_their_port_is_taken_are_recognised(output: str) -> None:
    assert says_port_taken(output)
    assert not says_port_taken("FATAL: password authentication failed")
