"""The database a verb works on: the configured one or an embedded PostgreSQL, migrated."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import FrameType
from collections.abc import Iterator

import asyncpg

from tcgraph.config import Settings
from tcgraph.ingest import checkpoints
from tcgraph.logs import console
from tcgraph.store.embedded import EmbeddedPostgres
from tcgraph.store.migrate import migrate, plan
from tcgraph.store.pool import CONNECTION_ERRORS


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # As a shell reports a process a signal ended: 128 + its number.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (a cluster half started or
    half stopped could not be stopped), then take effect."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded PostgreSQL for as long as needed.

    Within the block SIGINT and SIGTERM end the verb through its normal exit
    path (SystemExit, 128 + the signal's number: transactions roll back, pools
    close), so the embedded PostgreSQL is stopped (or released to the other
    processes using it) on the way out instead of being left running. A verb
    may install its own handlers inside the block (serve, follow).
    """
    previous = {signum: signal.signal(signum, _exit_on_signal) for signum in _SIGNALS}
    try:
        if settings.database_url:
            checkpoints.reached("database-ready")
            yield settings.database_url
            return
        embedded = EmbeddedPostgres(settings.data_dir)
        try:
            with _signals_held():
                url = embedded.start()
            checkpoints.reached("database-ready")
            yield url
        finally:
            with _signals_held():
                embedded.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ReadOnlyDatabase(Exception):
    """The database URL given for writing is a hot standby or a read-only role."""

    def explain(self, verb: str) -> str:
        return (f"tcgraph {verb}: the database at --database-url refuses writes ({self}): it is "
                f"a hot standby or a read-only role. Migrations, imports and follow write to "
                f"the primary: give the primary's URL as --database-url (and a standby's as "
                f"serve --read-database-url)")


async def migrate_database(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    except asyncpg.ReadOnlySQLTransactionError as e:
        raise ReadOnlyDatabase(str(e)) from None
    finally:
        await conn.close()


async def migration_plan(url: str) -> int:
    """`tcgraph migrate --dry-run`: print what migrating would do; apply nothing."""
    try:
        conn = await asyncpg.connect(url)
    except CONNECTION_ERRORS as e:
        console.error("tcgraph migrate: cannot reach the database (%s: %s)", type(e).__name__, e)
        return 1
    try:
        print(await plan(conn))
    finally:
        await conn.close()
    return 0


async def fill_if_empty(url: str, settings: Settings) -> bool:
    from tcgraph.demo import write_demo
    from tcgraph.store.pool import open_pool

    pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=2))
    try:
        if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM tasks) "
                               "OR EXISTS (SELECT 1 FROM mirror_state)"):
            return False
        await write_demo(pool)
        return True
    finally:
        await pool.close()


def migrated(url: str, verb: str) -> list[str] | None:
    """Migrate the database at `url` for `verb`: the versions applied, or None once
    the reason it could not be done (unreachable, read-only) has been printed."""
    try:
        return asyncio.run(migrate_database(url))
    except CONNECTION_ERRORS as e:
        console.error("tcgraph %s: cannot reach the database (%s: %s)", verb, type(e).__name__, e)
    except ReadOnlyDatabase as e:
        console.error("%s", e.explain(verb))
    return None
