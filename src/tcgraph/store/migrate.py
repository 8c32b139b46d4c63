"""Applies `migrations/NNNN_*.sql` in order, each exactly once, without stalling a big table.

The rule every migration follows (tests/test_migrate_locks.py checks each one on a
populated database while a reader and a writer run beside it):

* A migration never holds a lock that blocks reads or writes of an existing
  table for longer than a catalog change takes. A migration runs in one
  transaction unless its first line is `-- tcgraph: no-transaction`; in a
  transaction it may create tables, functions and types, add nullable columns
  (no volatile default: no rewrite), and nothing that scans or rewrites an
  existing table. It waits at most `LOCK_TIMEOUT_MS` for each lock and, if it
  cannot get one (a long query holds the table), gives up and tries again later,
  so that the readers queued behind its request wait no longer than that.
* An index on an existing table is built `CONCURRENTLY`, alone in its own
  no-transaction migration (`CREATE INDEX CONCURRENTLY IF NOT EXISTS`: reads and
  writes go on during the build). A build that was interrupted leaves an INVALID
  index behind; the next run drops it (`DROP INDEX CONCURRENTLY`) and builds it
  again. Every statement of a no-transaction migration must be safe to run again.
* Rows of an existing table are changed in batches, each committed on its own
  (a `DO` block that `COMMIT`s per batch, in a no-transaction migration), never
  in one statement over the whole table.

`plan` says, for `tcgraph migrate --dry-run`, what each pending migration will
do and which locks it takes (store/migration_locks.py reads them off the SQL).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from importlib import resources
from collections.abc import Sequence

import asyncpg

from tcgraph.store.migration_locks import Statement, split_statements

_log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every tcgraph process, so
# two processes starting at once do not both apply a migration.
_LOCK_ID = 0x7C67_7261
# A migration's first line that makes it run statement by statement, each
# committed on its own (CREATE INDEX CONCURRENTLY cannot run in a transaction).
NO_TRANSACTION = "-- tcgraph: no-transaction"
# The longest a transactional migration waits for a lock before it gives up and
# tries again: readers queued behind its request wait no longer than this.
LOCK_TIMEOUT_MS = 500
LOCK_ATTEMPTS = 40
_RETRY_PAUSE_S = 0.5
# How often a process waiting for another's migrations asks again for the lock.
# It polls with pg_try_advisory_lock instead of waiting in pg_advisory_lock: a
# session waiting there keeps a snapshot open, which a CREATE INDEX CONCURRENTLY
# of the process holding the lock would wait for (each waiting on the other).
_LOCK_POLL_S = 0.2
_CONCURRENT_INDEX = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<name>[\w.\"]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the file name without .sql) and SQL."""

    version: str
    sql: str

    @property
    def transactional(self) -> bool:
        """False when the first line is the no-transaction marker."""
        return self.sql.lstrip().partition("\n")[0].strip() != NO_TRANSACTION

    @property
    def statements(self) -> list[Statement]:
        return split_statements(self.sql)

    def describe(self) -> str:
        """What applying it does, for `tcgraph migrate --dry-run`."""
        how = ("in one transaction, waiting at most "
               f"{LOCK_TIMEOUT_MS} ms for each lock (then retried)" if self.transactional
               else "outside a transaction: each statement commits on its own")
        lines = [f"{self.version}: {how}"]
        for statement in self.statements:
            lines.append(f"  {statement.summary()}")
            lines += [f"    {lock}" for lock in statement.locks()]
        return "\n".join(lines)


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    folder = resources.files("tcgraph.store") / "migrations"
    found = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [Migration(name.removesuffix(".sql"), (folder / name).read_text()) for name in found]


async def pending(conn: asyncpg.Connection,
                  available: Sequence[Migration] | None = None) -> list[Migration]:
    """The migrations not applied yet to `conn`'s database, in order."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = ({r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if exists else set())
    return [m for m in (available if available is not None else migrations())
            if m.version not in done]


async def plan(conn: asyncpg.Connection) -> str:
    """What `migrate` would do to `conn`'s database, migration by migration."""
    todo = await pending(conn)
    if not todo:
        return "up to date"
    return "\n".join(m.describe() for m in todo)


async def migrate(conn: asyncpg.Connection, available: Sequence[Migration] | None = None,
                  lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> list[str]:
    """Apply pending migrations (of `available`, default: the package's); return the
    versions applied by this call."""
    applied: list[str] = []
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
        await asyncio.sleep(_LOCK_POLL_S)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in await pending(conn, available):
            if migration.transactional:
                await _in_transaction(conn, migration, lock_timeout_ms)
            else:
                await _statement_by_statement(conn, migration)
            applied.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied


async def _in_transaction(conn: asyncpg.Connection, migration: Migration,
                          lock_timeout_ms: int) -> None:
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                await conn.execute(migration.sql)
                await _record(conn, migration)
            return
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_ATTEMPTS:
                raise
            _log.warning("migration %s: a lock was not free within %d ms (attempt %d of %d); "
                         "trying again", migration.version, lock_timeout_ms, attempt,
                         LOCK_ATTEMPTS)
            await asyncio.sleep(_RETRY_PAUSE_S * attempt)


async def _statement_by_statement(conn: asyncpg.Connection, migration: Migration) -> None:
    for statement in migration.statements:
        index = _CONCURRENT_INDEX.match(statement.text)
        if index is not None:
            await drop_invalid_index(conn, index.group("name"))
        await conn.execute(statement.sql)
    await _record(conn, migration)


async def drop_invalid_index(conn: asyncpg.Connection, name: str) -> bool:
    """Drop index `name` if an interrupted concurrent build left it INVALID; True if so."""
    invalid = await conn.fetchval(
        "SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)", name)
    if not invalid:
        return False
    _log.warning("index %s is INVALID (an interrupted concurrent build): rebuilding it", name)
    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    return True


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration.version)
