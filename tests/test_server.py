"""The HTTP front door, served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from factories import FakeTask, store
from servers import serving
from services.postgres import connected
from tcgraph.config import Settings
from tcgraph.server import GC_YOUNG_THRESHOLD, create_app
from test_adversity import lock_waiters
from waiting import eventually_async


@pytest.fixture
async def base_url(pool: asyncpg.Pool, settings: Settings, database_url: str) -> AsyncIterator[str]:
    await store(pool, [FakeTask(task_id="t1", label="build")])
    with serving(create_app(settings, database_url)) as url:
        yield url


async def test_post_and_get_with_sql_report(base_url: str) -> None:
    query = '{ task(taskId: "t1") { taskId label status { state } } }'
    async with httpx.AsyncClient(base_url=base_url) as client:
        posted = await client.post("/graphql", json={"query": query})
        got = await client.get("/graphql", params={"query": query})
    for response in (posted, got):
        assert response.status_code == 200
        body = response.json()
        assert body["data"] == {"task": {"taskId": "t1", "label": "build",
                                         "status": {"state": "COMPLETED"}}}
        assert body["extensions"]["sql"]["statements"] == 1
        assert body["extensions"]["sql"]["rows"] == 1
        assert body["extensions"]["sql"]["ms"] > 0  # a statement really ran


async def test_the_sql_time_counts_what_a_statement_waited_and_no_more_than_the_request(
        base_url: str, database_url: str) -> None:
    # The statement waits on a lock the test holds: it was in the database at least from
    # when the test saw it waiting until the test released the lock, and the whole request
    # (as the client saw it) contains it. Both bounds follow from the order of events.
    query = '{ task(taskId: "t1") { taskId } }'
    async with connected(database_url) as locker, httpx.AsyncClient(
            base_url=base_url, timeout=60) as client:
        await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        sent = time.perf_counter()
        request = asyncio.create_task(client.post("/graphql", json={"query": query}))
        try:
            await eventually_async(lambda: lock_waiters(locker),
                                   what="the request to wait on the locked table")
            seen_waiting = time.perf_counter()
        finally:
            releasing = time.perf_counter()
            await locker.execute("ROLLBACK")
        response = await request
        answered = time.perf_counter()
    body = response.json()
    assert body["data"] == {"task": {"taskId": "t1"}}
    held_ms = (releasing - seen_waiting) * 1000
    assert held_ms <= body["extensions"]["sql"]["ms"] <= (answered - sent) * 1000, (
        held_ms, body["extensions"]["sql"], (answered - sent) * 1000)


async def test_sql_report_is_off_unless_asked(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    with serving(create_app(settings.with_(explain=False), database_url)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            body = (await client.post(
                "/graphql", json={"query": "{ task(taskId: \"x\") { taskId } }"})).json()
    assert body["data"] == {"task": None} and "sql" not in body["extensions"]
    assert body["extensions"]["cost"] == {"requestedQueryCost": 1, "maximumAvailable": 250_000}


async def test_each_request_has_its_own_counters(base_url: str) -> None:
    query = '{ a: task(taskId: "t1") { taskId } b: tasks(taskIds: ["t1", "t2"]) { taskId } }'
    async with httpx.AsyncClient(base_url=base_url) as client:
        bodies = await asyncio.gather(*[client.post("/graphql", json={"query": query})
                                        for _ in range(10)])
    for response in bodies:
        assert response.json()["extensions"]["sql"]["statements"] == 1


async def test_health(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}


async def test_ready_is_503_when_the_database_is_gone(
        database_url: str, server_url: str, settings: Settings) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    with serving(create_app(settings, database_url)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health/ready")).status_code == 200
            async with connected(server_url) as admin:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            ready = await client.get("/health/ready")
            live = await client.get("/health/live")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert live.status_code == 200


async def test_mutations_and_bad_documents(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        syntax = await client.post("/graphql", json={"query": "{ task("})
        unknown = await client.post("/graphql", json={"query": "{ nope }"})
        not_json = await client.post("/graphql", content=b"{",
                                     headers={"content-type": "application/json"})
    assert "Syntax Error" in syntax.json()["errors"][0]["message"]
    assert "Cannot query field 'nope'" in unknown.json()["errors"][0]["message"]
    assert not_json.status_code == 400


async def test_graphql_answers_503_while_the_database_is_gone_and_recovers(
        database_url: str, server_url: str, settings: Settings) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    query = {"query": '{ task(taskId: "x") { taskId } }'}
    with serving(create_app(settings, database_url)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.post("/graphql", json=query)).status_code == 200
            async with connected(server_url) as admin:
                # Refuse new connections and end the open ones, as an outage would.
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name)
                down = await client.post("/graphql", json=query)
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            back = await client.post("/graphql", json=query)
    assert down.status_code == 503
    assert down.json()["errors"][0]["extensions"]["code"] == "DATABASE_UNAVAILABLE"
    assert back.status_code == 200 and back.json()["data"] == {"task": None}


READ_ONLY_ROLE = """
CREATE ROLE {role} LOGIN;
GRANT CONNECT ON DATABASE "{db}" TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
ALTER ROLE {role} SET default_transaction_read_only = on;
"""


async def test_serves_from_a_read_only_role(
        pool: asyncpg.Pool, database_url: str, server_url: str, settings: Settings) -> None:
    """The docs' read-only role is enough to serve, and cannot write."""
    await store(pool, [FakeTask(task_id="t1", label="build")])
    name = urlsplit(database_url).path.lstrip("/")
    role = f"reader_{name[-12:]}"
    async with connected(database_url) as admin:
        await admin.execute(READ_ONLY_ROLE.format(role=role, db=name))
    parts = urlsplit(database_url)
    reader_url = parts._replace(netloc=f"{role}@{parts.hostname or ''}").geturl()
    try:
        with serving(create_app(settings, reader_url)) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                body = (await client.post("/graphql", json={
                    "query": '{ task(taskId: "t1") { label status { state } } }'})).json()
        assert body["data"] == {"task": {"label": "build", "status": {"state": "COMPLETED"}}}
        async with connected(reader_url) as reader:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await reader.execute("UPDATE tasks SET label = 'x'")
    finally:
        async with connected(server_url) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f"DROP ROLE {role}")


async def test_the_collector_is_tuned_for_a_long_running_server(
        database_url: str, settings: Settings) -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        with serving(create_app(settings, database_url)) as url:
            assert httpx.get(f"{url}/health/live").status_code == 200
            # The schema, the pool and the modules are left out of later collections.
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*thresholds)
