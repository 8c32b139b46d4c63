"""Every migration, run on a populated database, lets readers and writers through.

For each migration in turn (tests/test_migrate.py checks the bookkeeping), on tables
that hold rows, with a reader and a writer each holding a transaction open on
every populated table (as a long request and the follower would):

1. the migration starts, and runs until it waits on a lock (or is done);
2. a second reader and a second writer then read and update every populated
   table. Both must finish while the first reader and writer are still open:
   a migration that held or queued a lock they conflict with would keep them
   waiting until the first ones end. The test watches pg_blocking_pids: a
   no-transaction migration must never block them; a transactional one only
   until its lock_timeout makes it give up (it retries later);
3. the first reader and writer end; the migration completes. It must not have
   rewritten a populated table (its relfilenode), built an index on one inside
   a transaction, or validated a constraint over one.

Decisions come from what PostgreSQL reports (pg_stat_activity, pg_blocking_pids,
the catalogs), not from how long anything took. Migrations shipped before the
rule (EXEMPT) built their indexes in a transaction; they are applied without the
check (docs/scaling.md says what they cost on a big table).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
from conftest import _admin, drop_database, with_database
from services.postgres import connected

from tcgraph.store.migrate import Migration, drop_invalid_index, migrate, migrations
from tcgraph.store.migration_locks import split_statements

EXEMPT = {"0002_index_ties_and_expiry", "0004_en_us_order", "0007_mirror_waiting_expires"}
ROWS = 5_000
_POLL_S = 0.02

_POPULATE = f"""
INSERT INTO tasks (task_id, task_group_id, scheduler_id, task_queue_id, project_id, label,
                   priority, retries, retries_left, created, deadline, expires, state,
                   definition)
SELECT 'task' || g, 'group' || (g / 100), 's', 'p/w', 'proj', 'label' || (g % 500), 'low', 5,
       5, now() - g * interval '1 minute', now() + interval '1 day',
       now() + g * interval '1 minute', 'completed', '{{"k": 1}}'
FROM generate_series(1, {ROWS}) g;
INSERT INTO task_dependencies SELECT 'task' || g, 'task' || (g - 1)
FROM generate_series(2, {ROWS}) g;
INSERT INTO index_entries (namespace, name, task_id, expires)
SELECT 'ns.' || (g % 50), 'n' || g, 'task' || g, now() + interval '1 year'
FROM generate_series(1, {ROWS}) g;
INSERT INTO index_namespaces SELECT 'ns', g::text, now() + interval '1 year'
FROM generate_series(0, 49) g;
"""


@dataclass
class Report:
    """What one migration did to the other sessions, and to the populated tables."""

    version: str
    blocked_by_migration: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


async def _populated(conn: asyncpg.Connection) -> list[str]:
    tables = [r["relname"] for r in await conn.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' "
        "AND relnamespace = 'public'::regnamespace ORDER BY 1")]
    return [t for t in tables
            if await conn.fetchval(f'SELECT count(*) FROM (SELECT FROM "{t}" LIMIT 2) s') == 2]


async def _catalog(conn: asyncpg.Connection, tables: list[str]) -> dict[str, object]:
    """What a migration must not change about populated tables without saying so."""
    return {
        "files": {r["relname"]: r["relfilenode"] for r in await conn.fetch(
            "SELECT relname, relfilenode FROM pg_class WHERE relname = ANY($1)", tables)},
        "indexes": {r["name"] for r in await conn.fetch(
            "SELECT indexrelid::regclass::text AS name FROM pg_index "
            "WHERE indrelid::regclass::text = ANY($1)", tables)},
        "checked": {r["conname"] for r in await conn.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid::regclass::text = ANY($1) "
            "AND contype IN ('c', 'f') AND convalidated", tables)},
        # Existing columns made NOT NULL (a scan); a column added NOT NULL with a
        # constant default is a catalog change, and not counted.
        "not_null": {(r["attrelid"], r["attname"]) for r in await conn.fetch(
            "SELECT attrelid, attname FROM pg_attribute WHERE attrelid::regclass::text = ANY($1) "
            "AND attnotnull AND attnum > 0", tables)},
        "columns": {(r["attrelid"], r["attname"]) for r in await conn.fetch(
            "SELECT attrelid, attname FROM pg_attribute WHERE attrelid::regclass::text = ANY($1) "
            "AND attnum > 0 AND NOT attisdropped", tables)},
    }


async def _one_row(conn: asyncpg.Connection, table: str, skip: int) -> str:
    """An UPDATE of one row of `table` (the `skip`-th) that changes nothing."""
    column = await conn.fetchval(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum LIMIT 1", table)
    return (f'UPDATE "{table}" SET "{column}" = "{column}" '
            f'WHERE ctid = (SELECT ctid FROM "{table}" ORDER BY ctid OFFSET {skip} LIMIT 1)')


async def _blocked_by(watch: asyncpg.Connection, pid: int) -> list[int]:
    return list(await watch.fetchval("SELECT pg_blocking_pids($1)", pid))


async def apply_watched(url: str, applying: list[Migration]) -> Report:
    """Apply `applying`'s last migration (the others are applied) as the module says."""
    migration = applying[-1]
    report = Report(migration.version)
    async with connected(url) as watch, connected(url) as reader1, connected(url) as writer1, \
            connected(url) as reader2, connected(url) as writer2, connected(url) as migrator:
        tables = await _populated(watch)
        before = await _catalog(watch, tables)
        first_rows = [await _one_row(watch, table, 0) for table in tables]
        second_rows = [await _one_row(watch, table, 1) for table in tables]
        r1, w1 = reader1.transaction(), writer1.transaction()
        await r1.start()
        await w1.start()
        for table, update in zip(tables, first_rows, strict=True):
            await reader1.fetch(f'SELECT * FROM "{table}" LIMIT 1')
            await writer1.execute(update)
        pid = migrator.get_server_pid()
        applied = asyncio.create_task(migrate(migrator, applying))
        while not applied.done() and not await watch.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid):
            await asyncio.sleep(_POLL_S)

        async def read_and_write() -> None:
            for table, update in zip(tables, second_rows, strict=True):
                await reader2.fetch(f'SELECT * FROM "{table}" LIMIT 1')
                await writer2.execute(update)

        others = asyncio.create_task(read_and_write())
        others_pids = (reader2.get_server_pid(), writer2.get_server_pid())
        try:
            while not others.done():
                for other in others_pids:
                    if pid in await _blocked_by(watch, other):
                        query = await watch.fetchval(
                            "SELECT query FROM pg_stat_activity WHERE pid = $1", other)
                        report.blocked_by_migration.append(query)
                        if not migration.transactional:
                            report.violations.append(f"a no-transaction statement blocked "
                                                     f"{query!r}")
                            raise _Stop
                await asyncio.sleep(_POLL_S)
            await others  # the reads and writes finished while reader1 and writer1 were open
        except _Stop:
            await watch.execute("SELECT pg_cancel_backend($1)", pid)
        finally:
            await r1.rollback()
            await w1.rollback()
            await asyncio.gather(applied, others, return_exceptions=True)
        if report.violations:
            return report
        await applied
        after = await _catalog(watch, tables)
        if after["files"] != before["files"]:
            report.violations.append(f"rewrote a populated table: {before['files']} -> "
                                     f"{after['files']}")
        new_indexes = after["indexes"] - before["indexes"]  # type: ignore[operator]
        if new_indexes and migration.transactional:
            report.violations.append(f"built {sorted(new_indexes)} on a populated table "
                                     "inside a transaction (SHARE lock for the whole build)")
        checked = after["checked"] - before["checked"]  # type: ignore[operator]
        not_null = (after["not_null"] - before["not_null"]) & before["columns"]  # type: ignore[operator]
        for what, found in (("a constraint", checked), ("NOT NULL", not_null)):
            if found:
                report.violations.append(f"validated {what} over a populated table: {found}")
    return report


class _Stop(Exception):
    pass


@pytest.fixture
async def empty_url(server_url: str) -> AsyncIterator[str]:
    name = "tcgraph_locks_" + str(id(object()))
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    await drop_database(server_url, name)


async def _walk(url: str, shipped: list[Migration]) -> list[Report]:
    reports = []
    for i, migration in enumerate(shipped):
        if migration.version in EXEMPT or i == 0:
            async with connected(url) as conn:
                await migrate(conn, shipped[:i + 1])
        else:
            reports.append(await apply_watched(url, shipped[:i + 1]))
        if i == 0:
            async with connected(url) as conn:
                await conn.execute(_POPULATE)
    return reports


async def test_every_migration_lets_readers_and_writers_through(empty_url: str) -> None:
    shipped = migrations()
    reports = await _walk(empty_url, shipped)
    assert [r.version for r in reports] == [m.version for m in shipped[1:]
                                            if m.version not in EXEMPT]
    assert [(r.version, r.violations) for r in reports if r.violations] == []


async def test_an_index_built_in_a_transaction_or_without_concurrently_is_caught(
        empty_url: str) -> None:
    shipped = [m for m in migrations() if m.version not in EXEMPT]
    await _walk(empty_url, shipped)
    plain = Migration("9001_plain_index", "CREATE INDEX tasks_by_priority ON tasks (priority)")
    report = await apply_watched(empty_url, [*shipped, plain])
    assert any("inside a transaction" in v for v in report.violations), report
    unmarked = Migration("9002_plain_index_outside",
                         "-- tcgraph: no-transaction\nCREATE INDEX tasks_by_p ON tasks (priority)")
    report = await apply_watched(empty_url, [*shipped, unmarked])
    assert any("no-transaction statement blocked" in v for v in report.violations), report
    scan = Migration("9005_label_not_null", "ALTER TABLE tasks ALTER COLUMN label SET NOT NULL")
    report = await apply_watched(empty_url, [*shipped, scan])
    assert any("validated NOT NULL" in v for v in report.violations), report


async def test_a_catalog_change_waits_behind_a_long_reader_without_queueing_others(
        empty_url: str) -> None:
    shipped = [m for m in migrations() if m.version not in EXEMPT]
    await _walk(empty_url, shipped)
    column = Migration("9003_add_column",
                       "ALTER TABLE tasks ADD COLUMN note text NOT NULL DEFAULT ''")
    report = await apply_watched(empty_url, [*shipped, column])
    # It queued behind reader1 and the second reader waited behind it, until the
    # migration's lock_timeout made it step aside; it then applied once reader1 ended.
    assert report.violations == []
    assert report.blocked_by_migration
    async with connected(empty_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM tasks WHERE note = ''") == ROWS


async def test_an_invalid_index_left_by_an_interrupted_build_is_rebuilt(
        empty_url: str) -> None:
    shipped = [m for m in migrations() if m.version not in EXEMPT]
    await _walk(empty_url, shipped)
    unique = Migration("9004_unique_label",
                       "-- tcgraph: no-transaction\n"
                       "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS tasks_unique_label "
                       "ON tasks (label, project_id)")
    async with connected(empty_url) as conn:
        # Duplicates make the concurrent build fail half way: the index stays, INVALID.
        with pytest.raises(asyncpg.UniqueViolationError):
            await migrate(conn, [*shipped, unique])
        assert await conn.fetchval("SELECT indisvalid FROM pg_index "
                                   "WHERE indexrelid = 'tasks_unique_label'::regclass") is False
        await conn.execute("UPDATE tasks SET label = task_id")
        # IF NOT EXISTS alone would keep the invalid index; migrate drops and rebuilds it.
        assert await migrate(conn, [*shipped, unique]) == ["9004_unique_label"]
        assert await conn.fetchval("SELECT indisvalid FROM pg_index "
                                   "WHERE indexrelid = 'tasks_unique_label'::regclass") is True
        assert await drop_invalid_index(conn, "tasks_unique_label") is False


def test_statements_split_at_top_level_semicolons_only() -> None:
    sql = ("-- a; comment\nCREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$;\n"
           "SELECT 'x;y', \"odd;name\" FROM t; /* c; */ DO $body$ BEGIN COMMIT; END $body$;\n")
    assert [s.sql.splitlines()[-1] for s in split_statements(sql)] == [
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$",
        "SELECT 'x;y', \"odd;name\" FROM t",
        "/* c; */ DO $body$ BEGIN COMMIT; END $body$",
    ]


def test_no_transaction_migrations_can_run_again() -> None:
    """A no-transaction migration interrupted half way runs again from its first statement."""
    for migration in migrations():
        if migration.transactional:
            continue
        for statement in migration.statements:
            text = " ".join(statement.sql.upper().split())
            if " INDEX " in text and "CONCURRENTLY" in text:
                assert "IF NOT EXISTS" in text or "IF EXISTS" in text, (migration.version, text)
