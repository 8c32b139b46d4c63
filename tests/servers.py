"""The app for tests that speak HTTP: a real uvicorn server on 127.0.0.1, or in-process."""

from __future__ import annotations

import contextlib
import socket
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
