"""`/health/live` and `/metrics` answered by a process of their own, on the ops port.

GraphQL work is CPU-bound Python on the event loop: a probe that reaches the
main port while a document is parsed, validated or completed waits until the
loop is free again, hundreds of milliseconds under load. A thread in the same
process does better but still waits for the GIL at each step of an answer (and
C code and garbage collections on the loop's thread do not hand it over). So `serve --ops-port P`
(TCGRAPH_OPS_PORT) starts this module as a small process beside the server,
listening on `--host`:P, which shares nothing with the event loops but files:

* each server process touches `heartbeat-<pid>` in the metrics directory
  every `HEARTBEAT_S` from its event loop (`beat`); `GET /health/live` answers
  200 while every living server process has beaten within `stall_timeout_ms`,
  else 503 naming the one that has not (a wedged loop is not alive, however
  quickly this process answers); with no server process alive, 503 as well;
* `GET /metrics` sums the server processes' figures from the same directory,
  as prometheus-client's multiprocess mode does for the main port's `/metrics`
  (the ops port turns that mode on, even with one worker).

The process ends with the server (`serve` stops it), or on its own within a
second once its parent is gone. At most `MAX_OPEN` connections are served at
once (more are closed) and an idle one is closed after `IDLE_S`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import orjson
import psutil
from prometheus_client import CONTENT_TYPE_LATEST

from tcgraph import logs, metrics

HEARTBEAT_S = 1.0
MAX_OPEN = 32
IDLE_S = 10.0
_PREFIX = "heartbeat-"


async def beat(directory: Path) -> None:
    """Touch this process's heartbeat file from the event loop until cancelled."""
    path = directory / f"{_PREFIX}{os.getpid()}"
    try:
        while True:
            path.touch()
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        path.unlink(missing_ok=True)


def stalled(directory: Path, stall_timeout_s: float) -> str | None:
    """Why the server is not alive (a living process has not beaten in time, or none
    lives), or None if it is. The files of processes that died are removed."""
    now = time.time()
    living = 0
    for path in directory.glob(f"{_PREFIX}*"):
        pid = int(path.name.removeprefix(_PREFIX))
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # its process just exited
            continue
        if not psutil.pid_exists(pid):
            path.unlink(missing_ok=True)
            continue
        living += 1
        if age > stall_timeout_s:
            return f"the event loop of server process {pid} has not run for {age:.1f} s"
    return None if living else "no server process is running"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_S
    server: _Listener

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/health/live":
            why = stalled(self.server.directory, self.server.stall_timeout_s)
            status = {"status": "ok"} if why is None else {"status": "stalled", "reason": why}
            self._answer(200 if why is None else 503, orjson.dumps(status), "application/json")
        elif self.path == "/metrics":
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
    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path,
                 stall_timeout_s: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.directory = directory
        self.stall_timeout_s = stall_timeout_s
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


def start(host: str, port: int, directory: Path, stall_timeout_s: float,
          log_format: str) -> subprocess.Popen[bytes]:
    """Start the probe process for the server running in this process (or its workers)."""
    return subprocess.Popen([sys.executable, "-m", "tcgraph.probes", "--host", host, "--port",
                             str(port), "--directory", str(directory), "--stall-timeout-s",
                             str(stall_timeout_s), "--parent", str(os.getpid()),
                             "--log-format", log_format])


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the probe process and wait for it."""
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
        return
    process.kill()
    process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """The probe process: answer until the parent is gone or a signal ends it."""
    parser = argparse.ArgumentParser(prog="python -m tcgraph.probes")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", type=Path, required=True)
    parser.add_argument("--stall-timeout-s", type=float, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args(argv)
    logs.configure(0, args.log_format)
    listener = _Listener((args.host, args.port), args.directory, args.stall_timeout_s)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    while os.getppid() == args.parent:  # reparented: the server is gone
        time.sleep(1.0)
    listener.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
