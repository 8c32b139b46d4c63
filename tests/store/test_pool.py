"""store/pool.py: the pool's connections (each execution planned for its parameters), the
per-request counters, faults as typed errors, its figures read from asyncpg when asked,
and no web stack loaded with it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from tcgraph.config import Settings
from tcgraph.errors import BadInput, DatabaseUnavailable, StatementTimeout
from tcgraph.store.pool import Database, SqlStats, open_pool, pool_figures
from waiting import eventually_async

WEB_STACK = ("starlette", "strawberry", "uvicorn")


def test_the_store_and_the_write_side_load_no_web_stack() -> None:
    # A fresh interpreter: this one has loaded everything already.
    program = (
        "import importlib, pkgutil, sys\n"
        "import tcgraph.ingest\n"
        "names = ['tcgraph.store.pool', 'tcgraph.logs', 'tcgraph.metrics'] + [\n"
        "    'tcgraph.ingest.' + m.name for m in pkgutil.iter_modules(tcgraph.ingest.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {WEB_STACK!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]", f"importing the store and ingest loaded {loaded}"


async def test_figures_are_the_pools_own_at_the_moment_they_are_read(
        database_url: str, settings: Settings) -> None:
    pool = await open_pool(database_url, settings.with_(pool_min_size=1, pool_max_size=1))
    try:
        assert pool_figures(pool).in_use == 0 and pool_figures(pool).waiting == 0
        async with pool.acquire():
            held = pool_figures(pool)
            assert (held.size, held.in_use, held.waiting) == (1, 1, 0)
            # The only connection is held: a statement waits for it.
            waiter = asyncio.create_task(Database(pool, acquire_timeout=30).fetch("SELECT 1"))
            await asyncio.sleep(0)  # the task runs up to its wait for a connection
            assert pool_figures(pool).waiting == 1
        assert await waiter == [(1,)]
        after = pool_figures(pool)
        assert (after.in_use, after.waiting) == (0, 0)
    finally:
        await pool.close()


async def test_each_statement_and_its_rows_are_counted(pool: asyncpg.Pool) -> None:
    stats = SqlStats()
    db = Database(pool, stats)
    await db.fetch("SELECT generate_series(1, 3) AS n")
    await db.fetch("SELECT 1 AS one WHERE false")
    assert (stats.statements, stats.rows) == (2, 3)
    assert stats.ms > 0
    assert stats.as_dict() == {"statements": 2, "rows": 3, "ms": round(stats.ms, 3)}


async def test_a_statement_cancelled_by_its_timeout_is_a_statement_timeout_and_counted(
        database_url: str) -> None:
    stats = SqlStats()
    pool = await open_pool(database_url, Settings(statement_timeout_ms=50, pool_max_size=1))
    try:
        with pytest.raises(StatementTimeout):
            await Database(pool, stats).fetch("SELECT pg_sleep(60)")
    finally:
        await pool.close()
    assert (stats.statements, stats.rows) == (1, 0)


async def test_a_character_postgresql_cannot_store_is_bad_input(pool: asyncpg.Pool) -> None:
    with pytest.raises(BadInput, match="cannot compare"):
        await Database(pool).fetch("SELECT $1::text AS key", "a\x00b")


async def test_no_free_connection_within_the_acquire_timeout_is_an_outage(
        database_url: str) -> None:
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=1))
    try:
        async with pool.acquire():  # the pool's only connection, held
            with pytest.raises(DatabaseUnavailable, match="within 0.2 s"):
                await Database(pool, acquire_timeout=0.2).fetch("SELECT 1")
        assert await Database(pool).fetch("SELECT 1 AS one") == [(1,)]
    finally:
        await pool.close()


async def test_a_waiter_that_gives_up_is_no_longer_counted(pool: asyncpg.Pool) -> None:
    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        with pytest.raises(DatabaseUnavailable, match="no database connection became free"):
            await Database(pool, acquire_timeout=0.05).fetch("SELECT 1")
        assert pool_figures(pool).waiting == 0
        assert pool_figures(pool).in_use == pool.get_max_size()
    finally:
        for conn in connections:
            await pool.release(conn)


# --- connections terminated under the pool ---------------------------------------


async def wait_for_backend(conn: asyncpg.Connection, query: str) -> int:
    """The pid of tcgraph's backend running `query`, once it runs."""

    async def backend() -> int | None:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'tcgraph' AND state = 'active' AND query = $1", query)
        return pid

    return await eventually_async(backend, what=f"tcgraph's backend to run {query!r}")


async def test_a_pooled_connection_terminated_while_idle_is_replaced(database_url: str) -> None:
    """pg_terminate_backend (a failover, an admin) under an idle pool: the next request is answered.

    The request is made only once asyncpg has seen the connection close (its termination
    listener fired), so this is the case where the pool must open a new connection.
    """
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=1))
    admin = await asyncpg.connect(database_url)
    closed = asyncio.Event()
    try:
        async with pool.acquire() as conn:  # the pool's only connection
            conn.add_termination_listener(lambda _: closed.set())
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(closed.wait(), 30)
        assert await Database(pool, acquire_timeout=2).fetch("SELECT 1 AS one") == [(1,)]
    finally:
        await admin.close()
        await pool.close()


# store/pool.py's Database.fetch calls conn.terminate() on a connection lost mid-statement;
# by then asyncpg has already detached the pool's proxy from the closed connection, and
# terminate() raised InterfaceError ("connection has been released back to the pool"),
# which escaped instead of DatabaseUnavailable.
async def test_a_pooled_connection_terminated_mid_statement_is_an_outage(
        database_url: str) -> None:
    """The backend of a running statement terminated: DatabaseUnavailable, then served again."""
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=1))
    admin = await asyncpg.connect(database_url)
    sleeping = "SELECT pg_sleep(60)"
    try:
        running = asyncio.create_task(Database(pool, acquire_timeout=2).fetch(sleeping))
        pid = await wait_for_backend(admin, sleeping)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(running, 30)
        assert await Database(pool, acquire_timeout=2).fetch("SELECT 1 AS one") == [(1,)]
    finally:
        await admin.close()
        await pool.close()




# --- the statement timeout ------------------------------------------------------


async def test_every_pooled_connection_carries_the_statement_timeout(database_url: str) -> None:
    settings = Settings(statement_timeout_ms=1234, pool_min_size=2, pool_max_size=2)
    pool = await open_pool(database_url, settings)
    try:
        async with pool.acquire() as one, pool.acquire() as two:
            assert await one.fetchval("SHOW statement_timeout") == "1234ms"
            assert await two.fetchval("SHOW statement_timeout") == "1234ms"
            # A session that changed it gets it back when the pool resets the connection.
            await two.execute("SET statement_timeout = 0")
            with pytest.raises(asyncpg.QueryCanceledError):
                await one.execute("SELECT pg_sleep(3)")
        async with pool.acquire() as one, pool.acquire() as two:
            assert await one.fetchval("SHOW statement_timeout") == "1234ms"
            assert await two.fetchval("SHOW statement_timeout") == "1234ms"
    finally:
        await pool.close()


async def test_custom_plans_survive_the_reset_of_each_release(database_url: str) -> None:
    # Every execution is planned for its own parameters: a generic plan of `latest` reads
    # a label's whole history (docs/scaling.md).
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=1))
    try:
        for _ in range(3):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
                # What a release's RESET ALL undoes, the pool's reset sets again.
                await conn.execute("SET plan_cache_mode = auto")
    finally:
        await pool.close()
