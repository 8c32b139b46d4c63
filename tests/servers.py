"""The app for tests that speak HTTP: `tcgraph serve` as a process, a uvicorn server in a thread
(both on 127.0.0.1), or in-process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import asyncpg
import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    """Poll `url`'s readiness until it answers 200; fail at once if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become ready")


class ServeProcess:
    """A `tcgraph serve` process: its URL while it runs, its exit status and stderr after."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.returncode: int | None = None
        self.stderr = ""


@contextlib.contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None,
                  ready_timeout: float = 90) -> Iterator[ServeProcess]:
    """Run `tcgraph serve --port <free> *args` for the block, once it is ready.

    Leaving the block sends SIGTERM and waits for the exit, as a service manager stops it; the
    caller asserts on `returncode` and `stderr` afterwards.
    """
    served = ServeProcess(free_port())
    process = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--port", str(served.port), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=os.environ if env is None else env)
    try:
        wait_ready(served.url, process, ready_timeout)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        _, served.stderr = process.communicate(timeout=60)
        served.returncode = process.returncode


@contextlib.contextmanager
def serving(app: object, startup_timeout: float = 10.0, **options: Any) -> Iterator[str]:
    """Serve `app` in a thread for the duration of the block; yields its base URL.

    `options` go to uvicorn (e.g. `http_server.uvicorn_options(settings)`, as `serve` runs it).
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def asgi_client(app: Any, pool: asyncpg.Pool, host: str = "tcgraph.test") -> httpx.AsyncClient:
    """An HTTP client calling `app` in-process (httpx's ASGI transport) at http://`host`.

    The transport does not run the lifespan, which opens the app's pool: `pool` stands in for it.
    """
    app.state.pool = pool
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")
