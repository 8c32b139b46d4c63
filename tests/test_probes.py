"""probes.py: /health/live and /metrics on the ops port, answered by a process of their own."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from servers import serve_process
from test_http_server import listening_process

PATIENCE_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_ops_port_answers_while_the_server_is_stopped(database_url: str) -> None:
    ops_port = free_port()
    env = {**os.environ, "TCGRAPH_STALL_TIMEOUT_MS": "5000"}
    with serve_process("--database-url", database_url, "--ops-port", str(ops_port),
                       env=env) as served:
        ops = httpx.Client(base_url=f"http://127.0.0.1:{ops_port}", timeout=PATIENCE_S)
        assert httpx.post(f"{served.url}/graphql",
                          json={"query": "{ __typename }"}).status_code == 200
        server = listening_process(served.port)
        until(lambda: ops.get("/health/live").status_code == 200, "never live")
        server.suspend()  # SIGSTOP: its event loop runs nothing from now on
        try:
            live = ops.get("/health/live")
            assert live.status_code == 200 and live.json() == {"status": "ok"}
            figures = samples(ops.get("/metrics").text)
            assert figures[("tcgraph_requests_total", (("operation", "query"),
                                                       ("route", "/graphql"),
                                                       ("status", "200")))] == 1
            # Stopped past stall_timeout_ms, the server is reported stalled.
            until(lambda: ops.get("/health/live").status_code == 503, "never stalled")
            reason = ops.get("/health/live").json()["reason"]
            assert reason.startswith(f"the event loop of server process {server.pid} has not run")
        finally:
            server.resume()
        until(lambda: ops.get("/health/live").status_code == 200, "stayed stalled")
        assert ops.get("/graphql").status_code == 404
        ops.close()
    assert served.returncode == 0, served.stderr


def test_the_probe_process_ends_with_a_killed_server(database_url: str) -> None:
    ops_port = free_port()
    with serve_process("--database-url", database_url, "--ops-port", str(ops_port)) as served:
        server = listening_process(served.port)
        (prober,) = [p for p in server.children() if "tcgraph.probes" in " ".join(p.cmdline())]
        server.kill()
        prober.wait(PATIENCE_S)  # it notices it was orphaned; psutil.TimeoutExpired if not
    assert not prober.is_running()


def test_serve_with_an_ops_port_and_two_workers(database_url: str) -> None:
    ops_port = free_port()
    with serve_process("--database-url", database_url, "--workers", "2",
                       "--ops-port", str(ops_port)) as server:
        assert httpx.post(f"{server.url}/graphql",
                          json={"query": "{ __typename }"}).status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{ops_port}") as ops:
            until(lambda: samples(ops.get("/metrics").text).get(("tcgraph_workers", ())) == 2,
                  "the second worker never started")
            assert ops.get("/health/live").status_code == 200
            assert samples(ops.get("/metrics").text)[
                ("tcgraph_requests_total", (("operation", "query"), ("route", "/graphql"),
                                            ("status", "200")))] == 1
    assert server.returncode == 0, server.stderr
    # tcgraph's lines only: http.server's own request lines are not written.
    assert all(line.startswith(("tcgraph: open", "INFO tcgraph.access"))
               for line in server.stderr.splitlines()), server.stderr
