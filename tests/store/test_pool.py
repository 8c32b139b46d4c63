"""store/pool.py: its figures are read from asyncpg when asked, and it loads no web stack."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from tcgraph.config import Settings
from tcgraph.errors import DatabaseUnavailable
from tcgraph.store.pool import Database, open_pool, pool_figures

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
