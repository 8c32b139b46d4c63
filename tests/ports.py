"""Ports for what the tests serve, with no window for another process to take them.

Finding a free port and binding it later leaves a window in which another process (other
test runs share this machine) may bind it first. Three ways close it, one for each kind
of server:

- an in-process server is handed a socket already bound and listening (`listening_socket`);
- a client that must find nothing listening gets a port bound here but never listened on
  (`refusing_port`): connections to it are refused, and no one else can take it meanwhile;
- a program that binds its own ports (`tcgraph serve`, PostgreSQL, pgbouncer, RabbitMQ) is
  started by `on_free_ports`, which starts it again on new ports when the program itself
  reports that a port was taken (`PortTaken`, recognised by `says_port_taken`, or a program
  that exited or never listened: `listens_on`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

import psutil

T = TypeVar("T")

HOST = "127.0.0.1"
# Starts on new ports before giving up: each collision needs another process to bind
# the very port just handed out, so a second one in a row is already rare.
ATTEMPTS = 5


class PortTaken(Exception):
    """A program could not bind a port it was given: another process took it first."""


def says_port_taken(output: str) -> bool:
    """Whether a program's error output says a port it was to bind was taken.

    The C library's text (Python, PostgreSQL, pgbouncer) and RabbitMQ's (`eaddrinuse` for
    its listener, `dist_port_already_used` for Erlang distribution).
    """
    text = output.lower()
    return any(said in text for said in ("address already in use", "eaddrinuse",
                                         "dist_port_already_used"))


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` or one of its descendants listens on HOST:`port`.

    A port that answers is not proof enough: it may be another process's, which took the
    port first while ours failed to bind it.
    """
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in member.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and tuple(conn.laddr) == (HOST, port):
                    return True
    return False


def listening_socket() -> socket.socket:
    """A TCP socket listening on a port of HOST the kernel chose (read it back with
    `getsockname()`), for an in-process server to accept on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port of HOST that refuses connections for the block (bound, never listened on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def _fresh_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel handed out just now (bound together, then freed)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


def on_free_ports(start: Callable[..., T], count: int = 1, attempts: int = ATTEMPTS) -> T:
    """`start(*ports)` with `count` ports just free, and again with new ones on PortTaken.

    `start` owns what it started: before raising PortTaken it must have stopped it.
    """
    taken: PortTaken | None = None
    for _ in range(attempts):
        try:
            return start(*_fresh_ports(count))
        except PortTaken as e:
            taken = e
    raise AssertionError(f"each of {attempts} starts found a port taken") from taken
