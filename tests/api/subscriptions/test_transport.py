"""graphql-transport-ws caps and codes (api/subscriptions/transport.py, hub.py's drop):
connections and subscriptions over their caps, a client that does not read, bad documents."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import httpx
import pytest

from api.subscriptions.test_streams import changes, error_of
from api.subscriptions.wsclient import GROUP_CHANGES, TASK_CHANGES, connected
from factories import FakeTask, store
from servers import serving
from waiting import eventually_async
from tcgraph.api.subscriptions.transport import SETUPS_AT_ONCE
from tcgraph.config import Settings
from tcgraph.server import create_app


def metric(url: str, name: str) -> float:
    """The sum of a metric's samples named `name` (every label set) on /metrics."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def until_metric(url: str, name: str, value: float, below: bool = False) -> float:
    """Read `name` until it reaches `value` (or, `below`, falls to it): the event waited for."""
    async with asyncio.timeout(60):
        while True:
            found = await asyncio.to_thread(metric, url, name)
            if (found <= value) if below else (found >= value):
                return found
            await asyncio.sleep(0.05)


async def test_subscriptions_per_connection_are_capped(database_url: str, settings: Settings,
                                                       pool: asyncpg.Pool) -> None:
    await store(pool, [FakeTask(task_group_id="g")])
    with serving(create_app(settings.with_(max_subscriptions=2), database_url)) as url:
        # The metrics are the process's: count from where they stand.
        subscriptions = metric(url, "tcgraph_subscriptions")
        events = metric(url, "tcgraph_subscription_events_total")
        async with connected(url) as client:
            for op_id in ("1", "2"):
                await client.subscribe(op_id, GROUP_CHANGES, g="g")
                await changes(client, op_id, 1)
            await client.subscribe("3", GROUP_CHANGES, g="g")
            extensions = await error_of(client, "3")
            assert extensions["code"] == "LIMIT_EXCEEDED"
            assert extensions["limit"] == "max_subscriptions" and extensions["maximum"] == 2
            # Completing one makes room; the connection itself was never closed.
            await client.complete("1")
            await until_metric(url, "tcgraph_subscriptions", subscriptions + 1, below=True)
            await client.subscribe("4", GROUP_CHANGES, g="g")
            assert (await changes(client, "4", 1))[0]["task"] is not None
            assert metric(url, "tcgraph_subscriptions") == subscriptions + 2
            assert metric(url, "tcgraph_ws_connections") >= 1
            assert metric(url, "tcgraph_subscription_events_total") == events + 3
        await until_metric(url, "tcgraph_subscriptions", subscriptions, below=True)


async def test_connections_per_process_are_capped(database_url: str, settings: Settings) -> None:
    with serving(create_app(settings.with_(max_websockets=2), database_url)) as url:
        dropped = metric(url, "tcgraph_subscription_clients_dropped_total")
        async with connected(url), connected(url):
            async with connected(url, init=False) as third:
                code, reason = await third.close_code()
            assert code == 4503 and "max_websockets" in reason
        assert metric(url, "tcgraph_subscription_clients_dropped_total") == dropped + 1
        # Below the cap again, a connection is served.
        async with connected(url) as client:
            await client.send({"type": "ping"})
            assert await client.receive() == {"type": "pong"}


def small_buffers() -> socket.socket:
    """A client socket whose kernel buffers are small, so that not reading fills them fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_client_that_does_not_read_is_closed_with_a_code(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(200)]
    await store(pool, tasks)
    with serving(create_app(settings.with_(max_queued_changes=50), database_url)) as url:
        dropped = metric(url, "tcgraph_subscription_clients_dropped_total")
        subscriptions = metric(url, "tcgraph_subscriptions")
        sock = small_buffers()
        sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        async with connected(url, sock=sock) as slow:
            await slow.subscribe("a", GROUP_CHANGES, g="g")
            slow.ws.transport.pause_reading()
            step = 0
            # Change every task again and again until the server gives up on the client.
            while metric(url, "tcgraph_subscription_clients_dropped_total") < dropped + 1:
                step += 1
                assert step < 1_000, "the server never closed a client that does not read"
                await store(pool, [FakeTask(task_id=t.task_id, task_group_id="g",
                                            state="running", runs=step) for t in tasks])
            await until_metric(url, "tcgraph_subscriptions", subscriptions, below=True)
            slow.ws.transport.resume_reading()
            code, reason = await slow.close_code()
        assert code == 4413 and "max_queued_changes" in reason


@pytest.mark.parametrize("document, variables, code", [
    ("subscription { taskGroupChanges(taskGroupId: \"g\") { nope } }", {},
     "GRAPHQL_VALIDATION_FAILED"),
    ("subscription { taskGroupChanges(taskGroupId: \"g\") { task { "
     + "dependencies { " * 12 + "taskId" + " }" * 12 + " } } }", {}, "LIMIT_EXCEEDED"),
    (TASK_CHANGES, {"ids": ["x"] * 11}, "LIMIT_EXCEEDED"),
    ("subscription { taskGroupChanges(taskGroupId: \"g\\u0000\") { cursor } }", {},
     "BAD_USER_INPUT"),
])
async def test_bad_documents_are_coded_errors(database_url: str, settings: Settings,
                                              document: str, variables: dict[str, object],
                                              code: str) -> None:
    with serving(create_app(settings.with_(max_keys=10), database_url)) as url:
        async with connected(url) as client:
            await client.subscribe("bad", document, **variables)
            assert (await error_of(client, "bad"))["code"] == code
            # The connection goes on serving.
            await client.subscribe("good", GROUP_CHANGES, g="g")
            await client.send({"type": "ping"})
            assert await client.receive() == {"type": "pong"}


async def test_a_document_over_max_cost_is_refused(database_url: str, settings: Settings) -> None:
    # A subscription's cost is that of one event (GROUP_CHANGES': 4).
    with serving(create_app(settings.with_(max_cost=3), database_url)) as url:
        async with connected(url) as client:
            await client.subscribe("c", GROUP_CHANGES, g="g")
            # Refused as it starts: its one result is the error, then it is complete.
            message = await client.receive()
            assert message["type"] == "next" and message["payload"]["data"] is None
            extensions = message["payload"]["errors"][0]["extensions"]
            assert extensions["code"] == "LIMIT_EXCEEDED" and extensions["limit"] == "max_cost"
            assert await client.receive() == {"id": "c", "type": "complete"}


async def test_operations_are_set_up_a_bounded_number_at_once(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    await store(pool, [FakeTask(task_group_id="g")])
    app = create_app(settings, database_url)
    count = SETUPS_AT_ONCE + 36
    with serving(app) as url:
        hub = app.state.hub
        async with connected(url) as first, connected(url) as second:
            async with pool.acquire() as locker, locker.transaction():
                # Every snapshot read waits: the operations holding a place keep it.
                await locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                for n in range(count):
                    await (first if n % 2 else second).subscribe(str(n), GROUP_CHANGES, g="g")
                for client in (first, second):
                    # Answered after the subscribe messages before it were handled.
                    await client.send({"type": "ping"})
                    assert await client.receive() == {"type": "pong"}

                async def all_places_taken() -> bool:
                    return bool(app.state.websockets.setups.locked())

                await eventually_async(all_places_taken, what="every place to be taken")
                assert len(hub.subscribers()) == SETUPS_AT_ONCE
            # Once the reads can go on, every operation gets its place in turn.
            received = 0
            for client, share in ((first, count // 2), (second, count - count // 2)):
                for _ in range(share):
                    assert (await client.receive())["type"] == "next"
                    received += 1
        assert received == count
