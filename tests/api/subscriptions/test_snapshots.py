"""Opening snapshots read together (api/subscriptions/snapshots.py): subscriptions that start
while a read runs share the next one, and share its failure as a coded error."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.subscriptions.test_streams import changes
from api.subscriptions.wsclient import GROUP_CHANGES, connected
from factories import FakeTask, store
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app
from waiting import eventually_async

GROUPS = [f"group-{n:02d}" for n in range(40)]


async def test_subscriptions_starting_together_share_one_read(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    await store(pool, [FakeTask(task_group_id=g) for g in GROUPS])
    app = create_app(settings, database_url)
    with serving(app) as url:
        async with connected(url) as client:
            await client.subscribe("first", GROUP_CHANGES, g=GROUPS[0])
            assert (await changes(client, "first", 1))[0]["task"] is not None
            snapshots = app.state.hub.snapshots
            reads = snapshots.reads
            async with pool.acquire() as locker, locker.transaction():
                await locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                for n, group in enumerate(GROUPS):
                    await client.subscribe(str(n), GROUP_CHANGES, g=group)
                # Every one registered with the hub has asked for its snapshot (nothing
                # is awaited in between): the first read waits on the lock, holding the
                # requests it took; the others wait for the next read.
                hub = app.state.hub

                async def all_registered() -> bool:
                    return len(hub.subscribers()) == len(GROUPS) + 1

                await eventually_async(all_registered, what="every subscription to register")
                waiting = snapshots.waiting
            received: dict[str, Any] = {}
            while len(received) < len(GROUPS):
                message = await client.receive()
                assert message["type"] == "next", message
                received[message["id"]] = message["payload"]["data"]["taskGroupChanges"]
            assert snapshots.reads == reads + (2 if waiting else 1)
            for n in range(len(GROUPS)):
                task = received[str(n)]["task"]
                assert task is not None and task["taskId"] == received[str(n)]["taskId"]
            groups = {r["task_id"]: r["task_group_id"] for r in await pool.fetch(
                "SELECT task_id, task_group_id FROM tasks")}
            assert [groups[received[str(n)]["taskId"]] for n in range(len(GROUPS))] == GROUPS


async def test_a_failed_shared_read_is_each_subscriptions_coded_error(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    await store(pool, [FakeTask(task_group_id=g) for g in GROUPS[:5]])
    app = create_app(settings.with_(statement_timeout_ms=300), database_url)
    with serving(app) as url:
        async with connected(url) as client, pool.acquire() as locker, locker.transaction():
            await locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            for n, group in enumerate(GROUPS[:5]):
                await client.subscribe(str(n), GROUP_CHANGES, g=group)
            # PostgreSQL cancels each read that waits on the lock past the timeout.
            codes: dict[str, str] = {}
            while len(codes) < 5:
                message = await client.receive()
                assert message["type"] == "error", message
                codes[message["id"]] = message["payload"][0]["extensions"]["code"]
            assert codes == {str(n): "STATEMENT_TIMEOUT" for n in range(5)}
            await client.send({"type": "ping"})
            assert await client.receive() == {"type": "pong"}
