"""`tcgraph serve`: the checks before listening, and uvicorn with one or several workers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

from tcgraph import logs
from tcgraph.logs import console
from tcgraph.cli.database import database, fill_if_empty, migrated
from tcgraph.config import MULTIPROC_ENV, Settings

if TYPE_CHECKING:
    from tcgraph.ingest.follow import FollowOptions

log = logging.getLogger("tcgraph")


def exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cannot_listen(host: str, port: int, flag: str = "--port") -> str | None:
    """Why `host:port` cannot be listened on (as uvicorn will), and what to do; None if it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as e:
            return f"{host!r} is not an address, nor a name this machine resolves ({e.strerror})"
        except OSError as e:
            reason = e.strerror or str(e)
            if e.errno == errno.EADDRINUSE:
                return f"{reason} (is another server running? choose another {flag})"
            if e.errno == errno.EADDRNOTAVAIL:
                return (f"{reason}: {host} is not an address of this machine (give one of its "
                        f"addresses as --host, or 0.0.0.0 for all of them)")
            if e.errno == errno.EACCES:
                return f"{reason} (ports below 1024 need privileges: choose another {flag})"
            return reason
    return None


@contextlib.contextmanager
def metrics_dir(settings: Settings) -> Iterator[Path | None]:
    """With several workers or an ops port, a directory where the server processes keep
    the figures /metrics sums (and the ops port's heartbeats); else None.

    prometheus-client reads the variable when it is imported, which nothing
    has done yet in this process (config.py names it so that this can read it
    without importing prometheus-client). A directory the operator gave is
    used as it is and kept.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given or (settings.workers == 1 and not settings.ops_port):
        yield Path(given) if given else None
        return
    directory = tempfile.mkdtemp(prefix="tcgraph-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def serve(settings: Settings, follow: FollowOptions | None, directory: Path | None) -> int:
    """Check the ports, migrate, and serve until stopped (in `metrics_dir(settings)`)."""
    for port, flag in ((settings.port, "--port"), (settings.ops_port, "--ops-port")):
        why = cannot_listen(settings.host, port, flag) if port else None
        if why:
            console.error("tcgraph: cannot listen on %s:%d: %s", settings.host, port, why)
            return 1
    return _run_server(settings, follow, directory)


def _run_server(settings: Settings, follow: FollowOptions | None,
                metrics_dir: Path | None) -> int:
    import uvicorn

    from tcgraph import probes
    from tcgraph.http_server import uvicorn_options
    from tcgraph.server import create_app

    with database(settings) as url:
        applied = migrated(url, "serve")
        if applied is None:
            return 1
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        # A database that is, or is about to be, a mirror never gets demo data.
        if ((settings.demo or not settings.database_url) and follow is None
                and asyncio.run(fill_if_empty(url, settings))):
            log.info("the database was empty: wrote the demo dataset")
        console.info("tcgraph: open http://%s:%d/graphql", settings.host, settings.port)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the
        # signal again; ours turns that into a normal exit so the embedded
        # PostgreSQL is stopped on the way out instead of being left running.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, exit_on_signal)
        # tcgraph's logging, not uvicorn's (log_config=None), and tcgraph's
        # access line (observe.Observe) instead of uvicorn's.
        options: dict[str, Any] = dict(
            host=settings.host, port=settings.port, log_config=None,
            log_level=logs.uvicorn_level(settings.verbose), access_log=False,
            lifespan="on", **uvicorn_options(settings))
        prober = (probes.start(settings.host, settings.ops_port, metrics_dir,
                               settings.stall_timeout_ms / 1000, settings.log_format)
                  if settings.ops_port and metrics_dir else None)
        try:
            if settings.workers == 1:
                app = create_app(settings, settings.read_database_url or url,
                                 follow=follow, write_database_url=url)
                uvicorn.run(app, **options)
            else:
                # Worker processes build their own app (and logging) from the environment.
                os.environ.update(settings.with_(database_url=url).to_env())
                uvicorn.run("tcgraph.server:app_from_environment", factory=True,
                            workers=settings.workers, **options)
        finally:
            if prober is not None:
                probes.stop(prober)
    return 0
