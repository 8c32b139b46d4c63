"""probes.py: /health/live and /metrics on the ops port, answered while the event loop is busy."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import serve_process, serving
from tcgraph.config import Settings
from tcgraph.server import create_app

PATIENCE_S = 60.0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Wedge:
    """Holds a server's event loop in one blocking call until released."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        loop.call_soon_threadsafe(self._block)

    def _block(self) -> None:
        self.entered.set()
        self.release.wait(PATIENCE_S)


class LoopOf:
    """An ASGI app as it is, keeping the event loop it runs on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


@pytest.fixture
def served(settings: Settings, database_url: str) -> Iterator[tuple[str, LoopOf]]:
    (ops_port,) = free_ports(1)
    app = LoopOf(create_app(settings.with_(ops_port=ops_port, stall_timeout_ms=1_000),
                            database_url))
    with serving(app):
        yield f"http://127.0.0.1:{ops_port}", app


def test_the_ops_port_answers_while_the_event_loop_is_held(served) -> None:
    ops, app = served
    assert app.loop is not None  # the lifespan ran on it
    wedge = Wedge(app.loop)
    try:
        assert wedge.entered.wait(PATIENCE_S)
        # The loop runs nothing now: only the probe thread can answer.
        with httpx.Client(base_url=ops, timeout=PATIENCE_S) as probe:
            live = probe.get("/health/live")
            assert live.status_code == 200 and live.json() == {"status": "ok"}
            scraped = probe.get("/metrics")
            assert scraped.status_code == 200
            names = {f.name for f in text_string_to_metric_families(scraped.text)}
            assert {"tcgraph_requests", "tcgraph_pool_size"} <= names
            # Held past stall_timeout_ms (1 s here), the loop is reported stalled.
            deadline = time.monotonic() + PATIENCE_S
            while (stalled := probe.get("/health/live")).status_code == 200:
                assert time.monotonic() < deadline, "a held loop was never reported stalled"
                time.sleep(0.1)
            assert stalled.status_code == 503 and stalled.json()["status"] == "stalled"
            assert "the event loop has not run for" in stalled.json()["reason"]
    finally:
        wedge.release.set()
    with httpx.Client(base_url=ops, timeout=PATIENCE_S) as probe:
        deadline = time.monotonic() + PATIENCE_S
        while probe.get("/health/live").status_code != 200:  # until the next heartbeat
            assert time.monotonic() < deadline, "a released loop stayed stalled"
            time.sleep(0.1)
        assert probe.get("/graphql").status_code == 404


def test_serve_with_an_ops_port_and_two_workers(database_url: str) -> None:
    (ops_port,) = free_ports(1)
    with serve_process("--database-url", database_url, "--workers", "2",
                       "--ops-port", str(ops_port)) as server:
        assert httpx.post(f"{server.url}/graphql",
                          json={"query": "{ __typename }"}).status_code == 200
        deadline = time.monotonic() + PATIENCE_S
        while b"tcgraph_workers 2.0" not in httpx.get(f"{server.url}/metrics").content:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.1)
        for _ in range(4):  # either worker may answer: each does
            with httpx.Client(base_url=f"http://127.0.0.1:{ops_port}") as probe:
                assert probe.get("/health/live").status_code == 200
                samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                           for f in text_string_to_metric_families(probe.get("/metrics").text)
                           for s in f.samples}
                assert samples[("tcgraph_workers", ())] == 2
    assert server.returncode == 0, server.stderr
    # tcgraph's lines only: http.server's own request lines are not written.
    assert all(line.startswith(("tcgraph: open", "INFO tcgraph.access"))
               for line in server.stderr.splitlines()), server.stderr
