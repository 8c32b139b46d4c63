"""Direct subscriptions (api/subscriptions/frames.py): written by the hub as whole `next`
messages, keeping no execution state; and the WebSocket options the server runs with."""

from __future__ import annotations

import gc

import asyncpg
import pytest
from strawberry.types import ExecutionContext

from api.subscriptions.test_streams import changes
from api.subscriptions.test_transport import metric, until_metric
from api.subscriptions.wsclient import GROUP_CHANGES, connected
from factories import FakeTask, store
from servers import serving
from tcgraph.api.subscriptions.hub import Canonical
from tcgraph.api.subscriptions.transport import COLLECT_EVERY
from tcgraph.config import Settings
from tcgraph.http_server import uvicorn_options
from tcgraph.server import create_app
from waiting import eventually_async

SUBSCRIPTIONS = 20


def live_executions() -> int:
    """Strawberry execution contexts alive in this process (the server runs in a thread of it)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, ExecutionContext))


@pytest.mark.parametrize("sql_json, direct", [(True, True), (False, False)])
async def test_a_rendered_subscription_keeps_no_execution_state(
        database_url: str, settings: Settings, pool: asyncpg.Pool, sql_json: bool,
        direct: bool) -> None:
    task = FakeTask(task_group_id="g", state="pending")
    await store(pool, [task])
    app = create_app(settings.with_(sql_json=sql_json), database_url)
    with serving(app) as url:
        before = live_executions()
        async with connected(url) as client:
            for n in range(SUBSCRIPTIONS):
                await client.subscribe(str(n), GROUP_CHANGES, g="g")
                await changes(client, str(n), 1)
            subscribers = app.state.hub.subscribers()
            assert len(subscribers) == SUBSCRIPTIONS
            assert all((s.sink is not None) is direct for s in subscribers)
            # One instance of the compiled selection for all of them.
            assert len({id(s.shape) for s in subscribers}) == 1
            held = live_executions() - before
            # Without compiled selections each operation is executed per event and
            # keeps its execution state.
            assert held == 0 if direct else held >= SUBSCRIPTIONS
            # A direct subscription still receives changes, and completing it ends them.
            events = metric(url, "tcgraph_subscription_events_total")
            await client.complete("0")
            await until_metric(url, "tcgraph_subscriptions", SUBSCRIPTIONS - 1, below=True)
            await store(pool, [FakeTask(task_id=task.task_id, task_group_id="g",
                                        state="running")])
            received = {m["id"] for m in [await client.receive()
                                         for _ in range(SUBSCRIPTIONS - 1)]}
            assert received == {str(n) for n in range(1, SUBSCRIPTIONS)}
            await until_metric(url, "tcgraph_subscription_events_total",
                               events + SUBSCRIPTIONS - 1)


async def test_detached_operations_are_collected_every_so_many(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    await store(pool, [FakeTask(task_group_id="g")])
    app = create_app(settings, database_url)
    full: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(app.state.websockets.detached)

    with serving(app) as url:
        # Only the server's own collections run meanwhile.
        gc.disable()
        gc.callbacks.append(note)
        try:
            for connection in range(COLLECT_EVERY // 100):
                async with connected(url) as client:
                    for n in range(100):
                        await client.subscribe(str(n), GROUP_CHANGES, g="g")
                    for _ in range(100):
                        assert (await client.receive())["type"] == "next"

                    async def all_detached(count: int = (connection + 1) * 100) -> bool:
                        return bool(app.state.websockets.detached == count)

                    await eventually_async(all_detached, what="the operations to detach")
                assert full == ([COLLECT_EVERY] if connection == COLLECT_EVERY // 100 - 1
                                else [])
        finally:
            gc.callbacks.remove(note)
            gc.enable()


@pytest.mark.parametrize("enabled", [False, True])
async def test_compression_only_when_enabled(database_url: str, settings: Settings,
                                            enabled: bool) -> None:
    configured = settings.with_(ws_compression=enabled)
    with serving(create_app(configured, database_url), **uvicorn_options(configured)) as url:
        # The client offers permessage-deflate (websockets does by default).
        async with connected(url) as client:
            names = [e.name for e in client.ws.protocol.extensions]
            assert names == (["permessage-deflate"] if enabled else [])


async def test_a_message_over_max_body_bytes_closes_the_connection(
        database_url: str, settings: Settings) -> None:
    configured = settings.with_(max_body_bytes=4_096)
    with serving(create_app(configured, database_url), **uvicorn_options(configured)) as url:
        async with connected(url) as client:
            await client.subscribe("big", GROUP_CHANGES + " " * 5_000, g="g")
            code, _ = await client.close_code()
        assert code == 1009  # message too big


def test_canonical_values_are_shared_and_bounded() -> None:
    canonical: Canonical[tuple[str, ...]] = Canonical(limit=2)
    first = canonical(("a", "b"))
    assert canonical(tuple("ab")) is first
    canonical(("c",))
    canonical(("d",))  # the third distinct value: the oldest is forgotten
    again = tuple("ab")
    assert canonical(again) is again


async def test_a_connection_lost_mid_stream_releases_its_subscriptions(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(50)]
    await store(pool, tasks)
    app = create_app(settings, database_url)
    with serving(app) as url:
        # The metrics are the process's: count from where they stand.
        before = metric(url, "tcgraph_subscriptions")
        async with connected(url) as watcher:
            await watcher.subscribe("w", GROUP_CHANGES, g="g")
            await changes(watcher, "w", len(tasks))
            async with connected(url) as lost:
                for n in range(10):
                    await lost.subscribe(str(n), GROUP_CHANGES, g="g")
                await lost.receive()  # its frames are flowing
                # Gone without a close frame, with frames still queued for it.
                lost.ws.transport.abort()
                await store(pool, [FakeTask(task_id=t.task_id, task_group_id="g",
                                            state="running") for t in tasks])
                await until_metric(url, "tcgraph_subscriptions", before + 1, below=True)
            assert len(app.state.hub.subscribers()) == 1
            # The hub and the other connection go on.
            received = await changes(watcher, "w", len(tasks))
            assert {c["task"]["status"]["state"] for c in received} == {"RUNNING"}
