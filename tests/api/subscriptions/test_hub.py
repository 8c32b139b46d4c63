"""The change hub (api/subscriptions/hub.py): one read per burst whatever the number of
subscribers, and a database restarted under live subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from api.subscriptions.test_streams import changes
from api.subscriptions.test_transport import metric
from api.subscriptions.wsclient import GROUP_CHANGES, Client, connected
from factories import FakeTask, store
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool
from test_adversity import OwnPostgres, own_postgres

# A second selection of `task`: subscribers with different selections share a burst's statements.
STATES = """
subscription($g: ID!) { taskGroupChanges(taskGroupId: $g) { cursor task { status { state } } } }"""
BURST = "tcgraph_subscription_burst_sql_statements"


def burst_figures(url: str) -> tuple[float, float]:
    return metric(url, BURST + "_sum"), metric(url, BURST + "_count")


async def statements_per_burst(url: str, pool: asyncpg.Pool, tasks: list[FakeTask],
                               state: str, readers: list[tuple[Client, int]]) -> float:
    """Change every task in one commit; once each reader has its count of changes, the
    statements of the bursts that carried them, per burst."""
    total, bursts = burst_figures(url)
    await store(pool, [FakeTask(task_id=t.task_id, task_group_id="g", state=state)
                       for t in tasks])
    for client, count in readers:
        got = await changes_any(client, count)
        assert {c["task"]["status"]["state"] for c in got} == {state.upper()}
    total_after, bursts_after = burst_figures(url)
    assert bursts_after > bursts
    return (total_after - total) / (bursts_after - bursts)


async def changes_any(client: Client, count: int) -> list[dict[str, Any]]:
    """The next `count` TaskChanges on `client`, whichever operation they belong to."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = await client.receive()
        assert message["type"] == "next", message
        found.append(next(iter(message["payload"]["data"].values())))
    return found


async def test_a_burst_costs_the_same_statements_for_one_or_many_subscribers(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(50)]
    await store(pool, tasks)
    with serving(create_app(settings, database_url)) as url:
        async with connected(url) as one:
            await one.subscribe("only", GROUP_CHANGES, g="g")
            await changes(one, "only", 50)
            alone = await statements_per_burst(url, pool, tasks, "running", [(one, 50)])
            async with contextlib.AsyncExitStack() as stack:
                many = [await stack.enter_async_context(connected(url)) for _ in range(4)]
                for client in many:
                    for op in range(10):
                        await client.subscribe(str(op), (GROUP_CHANGES, STATES)[op % 2], g="g")
                    await changes_any(client, 10 * 50)  # the snapshots
                crowded = await statements_per_burst(
                    url, pool, tasks, "completed", [(one, 50), *((c, 10 * 50) for c in many)])
    # One read of the log and one load of the tasks (both selections in one statement).
    assert alone == crowded == 2


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    """A PostgreSQL of this test's own (migrated, holding group g), to stop and start."""
    with own_postgres([FakeTask(task_id=t, task_group_id="g", state="pending")
                       for t in TASKS], "tcgraph-subs-") as pg:
        yield pg


TASKS = ["AAAAAAAAQACAAAAAAAAAAA", "AAAAAAAAQACAAAAAAAAAAQ"]


@contextlib.asynccontextmanager
async def writer(url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(url, Settings(pool_min_size=0))
    try:
        yield pool
    finally:
        await pool.close()


async def test_subscriptions_live_through_a_database_restart(own_pg: OwnPostgres) -> None:
    settings = Settings(database_url=own_pg.url, pool_max_size=4)
    with serving(create_app(settings, own_pg.url)) as url:
        async with connected(url) as client:
            await client.subscribe("a", GROUP_CHANGES, g="g")
            await changes(client, "a", 2)
            await asyncio.to_thread(own_pg.stop)
            await asyncio.to_thread(own_pg.start)
            # Committed whether or not the hub has reconnected yet: it reads on from
            # where it was, so the change arrives either way.
            async with writer(own_pg.url) as pool:
                await store(pool, [FakeTask(task_id=TASKS[0], task_group_id="g",
                                            state="running")])
                got = await changes(client, "a", 1)
                assert got[0]["taskId"] == TASKS[0]
                assert got[0]["task"]["status"]["state"] == "RUNNING"
                await store(pool, [FakeTask(task_id=TASKS[1], task_group_id="g",
                                            state="completed")])
                assert (await changes(client, "a", 1))[0]["taskId"] == TASKS[1]


async def test_a_feed_down_too_long_closes_its_clients_with_a_code(
        own_pg: OwnPostgres) -> None:
    settings = Settings(database_url=own_pg.url, pool_max_size=4, feed_outage_ms=500)
    with serving(create_app(settings, own_pg.url)) as url:
        async with connected(url) as client:
            await client.subscribe("a", GROUP_CHANGES, g="g")
            await changes(client, "a", 2)
            await asyncio.to_thread(own_pg.stop)
            try:
                code, reason = await client.close_code()
            finally:
                await asyncio.to_thread(own_pg.start)
        assert code == 4503 and "change feed" in reason
