"""The app for tests that speak HTTP: `tcgraph serve` as a process, a uvicorn server in a thread
(both on 127.0.0.1), or in-process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import uvicorn

from ports import PortTaken, listening_socket, on_free_ports, says_port_taken
from waiting import eventually


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    """Poll `url`'s readiness until it answers 200; fail at once if `process` exits.

    Raises PortTaken when the process exited because its port was taken meanwhile.
    """

    def ready() -> bool:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            if says_port_taken(stderr):
                raise PortTaken(stderr)
            raise AssertionError(f"serve exited with {process.returncode}: {stderr}")
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200

    eventually(ready, what=f"{url} to be ready", timeout=timeout, interval=0.2,
               ignoring=(httpx.TransportError,))


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

    def start(port: int) -> tuple[ServeProcess, subprocess.Popen[str]]:
        served = ServeProcess(port)
        process = subprocess.Popen(
            [sys.executable, "-m", "tcgraph", "serve", "--port", str(port), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=os.environ if env is None else env)
        try:
            wait_ready(served.url, process, ready_timeout)
        except BaseException:
            _stop(process)
            raise
        return served, process

    served, process = on_free_ports(start)
    try:
        yield served
    finally:
        served.stderr = _stop(process)
        served.returncode = process.returncode


def _stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM `process`, as a service manager stops it; its stderr once it has exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    return stderr or ""


def serve_refused(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `tcgraph serve --port <free> *args` to its end: for a serve that must refuse to start.

    serve checks its port first, so a run that found the port taken is run again on another.
    """

    def run(port: int) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tcgraph", "serve", "--port", str(port), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 and says_port_taken(done.stderr):
            raise PortTaken(done.stderr)
        return done

    return on_free_ports(run)


@contextlib.contextmanager
def serving(app: Any, startup_timeout: float = 10.0, **options: Any) -> Iterator[str]:
    """Serve `app` in a thread for the duration of the block; yields its base URL.

    `options` go to uvicorn (e.g. `http_server.uvicorn_options(settings)`, as `serve` runs it).
    """
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", **options))
    # The socket is bound before the server starts: no other process can take its port.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        return bool(server.started)

    try:
        eventually(started, what="the test server to start", timeout=startup_timeout,
                   interval=0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def asgi_client(app: Any, pool: asyncpg.Pool, host: str = "tcgraph.test") -> httpx.AsyncClient:
    """An HTTP client calling `app` in-process (httpx's ASGI transport) at http://`host`.

    The transport does not run the lifespan, which opens the app's pool: `pool` stands in for it.
    """
    app.state.pool = pool
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")
