"""store/migrate.py: every shipped migration applied once, in order, under one advisory lock."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import asyncpg

from services.postgres import connected
from tcgraph.store.migrate import migrate, migrations
from waiting import eventually_async

VERSIONS = [m.version for m in migrations()]
# What the migrations' SQL says it creates (and later drops), read from the files themselves.
CREATED = re.compile(
    r"CREATE (?:UNIQUE )?(TABLE|INDEX) (?:CONCURRENTLY )?(?:IF NOT EXISTS )?(\w+)", re.I)
DROPPED = re.compile(r"DROP (TABLE|INDEX) (?:CONCURRENTLY )?(?:IF EXISTS )?(\w+)", re.I)


def declared() -> dict[str, set[str]]:
    """The tables and indexes the shipped migrations leave behind, by kind."""
    kept: dict[str, set[str]] = {"table": set(), "index": set()}
    for migration in migrations():
        for kind, name in CREATED.findall(migration.sql):
            kept[kind.lower()].add(name)
        for kind, name in DROPPED.findall(migration.sql):
            kept[kind.lower()].discard(name)
    return kept


async def empty(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


async def recorded(conn: asyncpg.Connection) -> list[str]:
    return [r["version"] for r in await conn.fetch(
        "SELECT version FROM schema_migrations ORDER BY version")]


async def test_an_empty_database_gets_every_migration_in_order_and_recorded(
        database_url: str) -> None:
    assert sorted(VERSIONS) == VERSIONS and len(set(VERSIONS)) == len(VERSIONS)
    async with connected(database_url) as conn:
        await empty(conn)
        assert await migrate(conn) == VERSIONS
        assert await recorded(conn) == VERSIONS
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        indexes = {r["indexname"] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    kept = declared()
    assert kept["table"] and kept["index"]
    assert tables == kept["table"] | {"schema_migrations"}
    assert kept["index"] <= indexes, sorted(kept["index"] - indexes)


async def test_a_second_run_applies_and_changes_nothing(database_url: str) -> None:
    async with connected(database_url) as conn:
        # The fixture's template ran them once already.
        before = await conn.fetch("SELECT version, applied_at FROM schema_migrations")
        schema = await conn.fetch("SELECT indexrelid FROM pg_index ORDER BY indexrelid")
        assert await migrate(conn) == []
        assert await conn.fetch("SELECT version, applied_at FROM schema_migrations") == before
        assert await conn.fetch("SELECT indexrelid FROM pg_index ORDER BY indexrelid") == schema


async def test_migrations_missing_from_the_record_are_applied_alone(database_url: str) -> None:
    # A database migrated by an earlier release (every migration before the last one
    # that creates something): only the later ones run.
    shipped = migrations()
    cut = max(i for i, m in enumerate(shipped) if CREATED.search(m.sql))
    async with connected(database_url) as conn:
        await empty(conn)
        assert await migrate(conn, shipped[:cut]) == VERSIONS[:cut]
        assert await migrate(conn) == VERSIONS[cut:]
        assert await recorded(conn) == VERSIONS
        made = {name for _, name in CREATED.findall(shipped[cut].sql)}
        found = {r["relname"] for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = ANY($1::text[])", list(made))}
        assert made and found == made


async def polls_for_the_lock(conn: asyncpg.Connection, pid: int) -> bool:
    # migrate() asks with pg_try_advisory_lock (a session waiting in pg_advisory_lock
    # would hold a snapshot that a concurrent index build waits for).
    last = await conn.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(last) and "pg_try_advisory_lock" in last


async def test_a_concurrent_run_waits_for_the_first_and_then_applies_nothing(
        database_url: str) -> None:
    async with connected(database_url) as admin, connected(database_url) as blocker, \
            connected(database_url) as first_conn, connected(database_url) as second_conn:
        await empty(admin)
        # The first run is held inside its critical section: the blocker's uncommitted
        # table of the same name makes its CREATE TABLE wait.
        await blocker.execute("BEGIN; CREATE TABLE schema_migrations (version text)")
        first = asyncio.create_task(migrate(first_conn))
        first_pid = first_conn.get_server_pid()
        await eventually_async(lambda: admin.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", first_pid),
            what="the first run to wait inside its critical section")
        second = asyncio.create_task(migrate(second_conn))
        second_pid = second_conn.get_server_pid()
        await eventually_async(lambda: polls_for_the_lock(admin, second_pid),
                               what="the second run to ask for the advisory lock")
        assert not first.done() and not second.done()
        await blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(first, 60) == VERSIONS
        assert await asyncio.wait_for(second, 60) == []
        assert await recorded(admin) == VERSIONS


async def test_dry_run_says_what_each_pending_migration_does_and_applies_nothing(
        database_url: str) -> None:
    async with connected(database_url) as conn:
        await conn.execute("DELETE FROM schema_migrations WHERE version >= '0014'")
        await conn.execute("DROP INDEX tasks_expires_task_id")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tcgraph", "migrate", "--dry-run",
                         "--database-url", database_url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0].startswith("0014_tasks_expires_task_id: outside a transaction")
    assert "SHARE UPDATE EXCLUSIVE on tasks: reads and writes go on" in out
    assert "0015_expiry_upkeep" in out and "0001_init" not in out
    async with connected(database_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations "
                                   "WHERE version >= '0014'") == 0
        assert await conn.fetchval("SELECT to_regclass('tasks_expires_task_id')") is None
