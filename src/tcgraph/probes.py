"""`/health/live` and `/metrics` answered from a thread of their own, on the ops port.

GraphQL work is CPU-bound Python on the event loop: a probe that reaches the
main port while a document is parsed, validated or completed waits until the
loop is free again, hundreds of milliseconds under load. A thread, unlike a
task, is preempted: the interpreter hands the GIL over every
`sys.getswitchinterval()` (5 ms), so a listener thread answers within
milliseconds however busy the loop is. `serve --ops-port P` (TCGRAPH_OPS_PORT)
starts one in every server process, on `--host`, answering

* `GET /health/live`: 200 while the event loop has run within
  `stall_timeout_ms` (it sets a heartbeat every `HEARTBEAT_S`), else 503: a
  loop that is wedged is not alive, however quickly the thread answers;
* `GET /metrics`: what the main port's `/metrics` answers.

With several workers each binds the ops port with SO_REUSEPORT; the kernel
spreads the probes over them, and `/metrics` is the sum over workers anyway.
At most `MAX_OPEN` connections are served at once (more are closed), and an
idle one is closed after `IDLE_S`, so the thread cannot be made to pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from tcgraph import metrics
from tcgraph.store.pool import PoolFigures

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
MAX_OPEN = 32
IDLE_S = 10.0


@dataclass
class Heartbeat:
    """When the event loop last ran a heartbeat (time.monotonic)."""

    stall_timeout_s: float
    last: float = field(default_factory=time.monotonic)

    def stalled_for(self) -> float | None:
        """How long the loop has been stuck past its timeout, or None if it is alive."""
        age = time.monotonic() - self.last
        return age if age > self.stall_timeout_s else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_S
    server: _Listener

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/health/live":
            stalled = self.server.heartbeat.stalled_for()
            if stalled is None:
                self._answer(200, orjson.dumps({"status": "ok"}), "application/json")
            else:
                self._answer(503, orjson.dumps({"status": "stalled",
                                                "reason": f"the event loop has not run for "
                                                          f"{stalled:.1f} s"}),
                             "application/json")
        elif self.path == "/metrics":
            metrics.report_pool(self.server.pool_figures())
            self._answer(200, metrics.exposition(), CONTENT_TYPE_LATEST)
        else:
            self._answer(404, orjson.dumps({"errors": [{
                "message": f"the ops port answers /health/live and /metrics, not {self.path}",
                "extensions": {"code": "NOT_FOUND"}}]}), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes every request to stderr; probes are not worth a line.
        pass


class _Listener(ThreadingHTTPServer):
    allow_reuse_port = True  # one ops port shared by the workers
    daemon_threads = True

    def __init__(self, address: tuple[str, int], heartbeat: Heartbeat,
                 pool_figures: Callable[[], PoolFigures]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.heartbeat = heartbeat
        self.pool_figures = pool_figures
        self.open = threading.BoundedSemaphore(MAX_OPEN)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.open.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.open.release()


async def serve_probes(host: str, port: int, stall_timeout_s: float,
                       pool_figures: Callable[[], PoolFigures]) -> None:
    """Answer probes on `host:port` from a thread, and beat the heartbeat, until cancelled."""
    heartbeat = Heartbeat(stall_timeout_s)
    listener = _Listener((host, port), heartbeat, pool_figures)
    thread = threading.Thread(target=listener.serve_forever, name="tcgraph-probes",
                              daemon=True)
    thread.start()
    log.debug("answering /health/live and /metrics on %s:%d", host, port)
    try:
        while True:
            heartbeat.last = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        listener.shutdown()
        listener.server_close()
        with contextlib.suppress(RuntimeError):
            thread.join()
