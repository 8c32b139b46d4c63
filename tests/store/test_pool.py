"""The pool's connections plan every execution for its own parameters."""

from __future__ import annotations

from tcgraph.config import Settings
from tcgraph.store.pool import open_pool


async def test_custom_plans_survive_the_reset_of_each_release(database_url: str) -> None:
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=1))
    try:
        for _ in range(3):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
                # What a release's RESET ALL undoes, the pool's reset sets again.
                await conn.execute("SET plan_cache_mode = auto")
    finally:
        await pool.close()

