"""store/migrate.py: every shipped migration applied once, in order, under one advisory lock."""

from __future__ import annotations

import asyncio
import re

import asyncpg

from services.postgres import connected
from tcgraph.store.migrate import migrate, migrations
from waiting import eventually_async

VERSIONS = [v for v, _ in migrations()]
# What the migrations' SQL says it creates (and later drops), read from the files themselves.
CREATED = re.compile(r"CREATE (?:UNIQUE )?(TABLE|INDEX) (?:IF NOT EXISTS )?(\w+)", re.I)
DROPPED = re.compile(r"DROP (TABLE|INDEX) (?:IF EXISTS )?(\w+)", re.I)


def declared() -> dict[str, set[str]]:
    """The tables and indexes the shipped migrations leave behind, by kind."""
    kept: dict[str, set[str]] = {"table": set(), "index": set()}
    for _, sql in migrations():
        for kind, name in CREATED.findall(sql):
            kept[kind.lower()].add(name)
        for kind, name in DROPPED.findall(sql):
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


async def test_a_migration_missing_from_the_record_is_applied_alone(database_url: str) -> None:
    # The last migration's effects undone and its record removed, as a database migrated
    # by the previous release would be: only that one runs.
    last_version, last_sql = migrations()[-1]
    async with connected(database_url) as conn:
        await empty(conn)
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        for version, sql in migrations()[:-1]:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        assert await migrate(conn) == [last_version]
        assert await recorded(conn) == VERSIONS
        made = {name for _, name in CREATED.findall(last_sql)}
        found = {r["relname"] for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = ANY($1::text[])", list(made))}
        assert made and found == made


async def advisory_waiters(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))


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
        await eventually_async(lambda: advisory_waiters(admin),
                               what="the second run to wait on the advisory lock")
        assert not first.done() and not second.done()
        await blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(first, 60) == VERSIONS
        assert await asyncio.wait_for(second, 60) == []
        assert await recorded(admin) == VERSIONS
