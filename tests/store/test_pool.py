"""The pool's connections plan every execution for its own parameters."""

from __future__ import annotations

import asyncpg

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


async def test_a_label_lookup_with_no_filter_stays_a_probe_after_many_executions(
        database_url: str) -> None:
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=1))
    try:
        async with pool.acquire() as conn:
            statement: asyncpg.prepared_stmt.PreparedStatement = await conn.prepare(
                "EXPLAIN SELECT task_id FROM tasks t WHERE t.label = $1 "
                "AND ($2::text IS NULL OR t.project_id = $2) "
                "ORDER BY t.created DESC, t.task_id DESC LIMIT 1")
            for _ in range(8):  # past the five custom plans of plan_cache_mode = auto
                plan = "\n".join(r[0] for r in await statement.fetch("L", None))
            assert "$2" not in plan and "project_id" not in plan, plan
    finally:
        await pool.close()
