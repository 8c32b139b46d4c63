"""The database a verb works on: the configured one or an embedded PostgreSQL, migrated."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Iterator

import asyncpg

from tcgraph.config import Settings
from tcgraph.logs import console
from tcgraph.store.embedded import EmbeddedPostgres
from tcgraph.store.migrate import migrate, plan
from tcgraph.store.pool import CONNECTION_ERRORS


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded PostgreSQL for as long as needed."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


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
