"""tcgraph behind real pgbouncer (transaction pooling) and on a real streaming hot standby."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from api.subscriptions.test_streams import changes
from api.subscriptions.wsclient import GROUP_CHANGES
from api.subscriptions.wsclient import connected as ws_connected
from factories import FAR, FakeTask, store
from services.postgres import PgBouncer, Standby, connected, wait_replayed
from servers import serve_refused, serving
from tcgraph.config import Settings
from tcgraph.server import create_app

PARENT = FakeTask(label="build-linux64/opt", task_group_id="group-scale", tags={"kind": "build"})
CHILD = FakeTask(label="test-linux64/opt-mochitest-browser-chrome-3", task_group_id="group-scale",
                 dependencies=[PARENT.task_id], state="failed")
ENTRIES = [("gecko.cache.level-3.toolchain.abc123", PARENT.task_id, 1.0, FAR)]
# The documents and batch routes a decision task and a UI lean on.
DOCUMENTS = [
    '{ task(taskId: "%s") { taskId label definition } }' % PARENT.task_id,
    '{ tasks(taskIds: ["%s", "nope"]) { taskId label dependencies { taskId } } }' % CHILD.task_id,
    '{ statuses(taskIds: ["%s", "%s"]) { taskId state expires runs { runId state } } }'
    % (PARENT.task_id, CHILD.task_id),
    '{ indexedTasks(indexPaths: ["gecko.cache.level-3.toolchain.abc123", "nope"]) '
    '{ indexPath taskId task { status { state } } } }',
    '{ labels(labels: ["build-linux64/opt", "test-linux64/opt-mochitest-browser-chrome-3"]) '
    '{ label latest { taskId status { state } } lastFailure { taskId } } }',
    '{ taskGroup(taskGroupId: "group-scale") { tasks(first: 10) { nodes { taskId label '
    'status { state } dependencies { status { state } } } pageInfo { hasNextPage } } } }',
    '{ namespace(path: "gecko.cache") { namespaces { nodes { path } } } }',
]
ROUTES = [
    ("/api/queue/v1/tasks", {"taskIds": [PARENT.task_id, CHILD.task_id]}),
    ("/api/queue/v1/tasks/status", {"taskIds": [PARENT.task_id, CHILD.task_id, "nope"]}),
    ("/api/index/v1/tasks/indexes", {"indexes": ["gecko.cache.level-3.toolchain.abc123"]}),
    ("/api/tcgraph/v1/labels/status", {"labels": ["build-linux64/opt"]}),
]


def answers(url: str) -> list[Any]:
    """Every document's and route's answer from the server at `url`, asked concurrently."""
    def ask(i: int) -> Any:
        with httpx.Client(base_url=url, timeout=30) as http:
            if i < len(DOCUMENTS):
                response = http.post("/graphql", json={"query": DOCUMENTS[i]})
            else:
                path, body = ROUTES[i - len(DOCUMENTS)]
                response = http.post(path, json=body)
            assert response.status_code == 200, response.text
            body = response.json()
            assert "errors" not in body, body
            return body

    jobs = list(range(len(DOCUMENTS) + len(ROUTES))) * 8  # many at once: pooled connections move
    with ThreadPoolExecutor(16) as threads:
        return list(threads.map(ask, jobs))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def test_served_through_pgbouncer_in_transaction_pooling(
        pool: asyncpg.Pool, database_url: str, pgbouncer: PgBouncer) -> None:
    await store(pool, [PARENT, CHILD], ENTRIES)
    direct = Settings(database_url=database_url)
    # Behind pgbouncer 1.18's transaction pooling the statement cache must be off.
    bounced = Settings(database_url=database_url, statement_cache_size=0, pool_max_size=8)
    with serving(create_app(direct, database_url)) as url:
        expected = await asyncio.to_thread(answers, url)
    with serving(create_app(bounced, pgbouncer.url(database_name(database_url)))) as url:
        got = await asyncio.to_thread(answers, url)
    assert got == expected
    assert expected[0]["data"]["task"]["taskId"] == PARENT.task_id


async def test_pgbouncer_applies_the_statement_timeout(
        database_url: str, pgbouncer: PgBouncer) -> None:
    conn = await asyncpg.connect(pgbouncer.url(database_name(database_url)),
                                 statement_cache_size=0)
    try:
        assert await conn.fetchval("SHOW statement_timeout") == "15s"
    finally:
        await conn.close()


@pytest.fixture
async def replicated(pool: asyncpg.Pool, database_url: str, standby: Standby) -> str:
    """The test's database, filled on the primary and replayed on the standby: its standby URL."""
    await store(pool, [PARENT, CHILD], ENTRIES)
    standby_url = standby.url(database_name(database_url))
    await wait_replayed(database_url, standby.url("postgres"))
    return standby_url


async def test_the_standby_serves_what_the_primary_wrote(
        pool: asyncpg.Pool, database_url: str, standby: Standby, replicated: str) -> None:
    later = FakeTask(label="build-linux64/opt", task_group_id="group-scale")
    settings = Settings(database_url=database_url, read_database_url=replicated)
    with serving(create_app(settings, replicated)) as url, httpx.Client(base_url=url) as http:
        query = {"query": '{ task(taskId: "%s") { taskId } }' % later.task_id}
        assert http.post("/graphql", json=query).json()["data"]["task"] is None
        await store(pool, [later])  # written to the primary
        await wait_replayed(database_url, standby.url("postgres"))
        assert http.post("/graphql", json=query).json()["data"]["task"] == {
            "taskId": later.task_id}
        expected = await asyncio.to_thread(answers, url)
    with serving(create_app(Settings(database_url=database_url), database_url)) as url:
        assert await asyncio.to_thread(answers, url) == expected


async def test_a_stopped_standby_answers_503_and_service_returns_by_itself(
        database_url: str, standby: Standby, replicated: str) -> None:
    settings = Settings(database_url=database_url, read_database_url=replicated,
                        pool_timeout_ms=2000)
    query = {"query": '{ task(taskId: "%s") { taskId } }' % PARENT.task_id}
    with serving(create_app(settings, replicated)) as url, httpx.Client(base_url=url) as http:
        assert http.post("/graphql", json=query).status_code == 200
        standby.stop()
        try:
            down = http.post("/graphql", json=query)
            assert down.status_code == 503
            assert down.json()["errors"][0]["extensions"]["code"] == "DATABASE_UNAVAILABLE"
            assert http.get("/health/ready").status_code == 503
        finally:
            await asyncio.to_thread(standby.start)
        # Back without a restart of tcgraph: the pool reconnects by itself.
        back = http.post("/graphql", json=query)
        assert back.status_code == 200, back.text
        assert back.json()["data"]["task"] == {"taskId": PARENT.task_id}


async def test_a_write_through_the_read_url_is_refused(replicated: str) -> None:
    async with connected(replicated) as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError,
                           match="cannot execute .* in a read-only transaction"):
            await conn.execute("DELETE FROM tasks")
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 2


def test_writing_commands_on_the_standby_are_refused_clearly(replicated: str, tmp_path: Path
                                                             ) -> None:
    dump = tmp_path / "entry.json"
    dump.write_text('{"namespace": "a.b", "taskId": "x", "rank": 0, "data": {}, '
                    '"expires": "2030-01-01T00:00:00.000Z"}')
    results: list[subprocess.CompletedProcess[str]] = []
    for verb in (["migrate"], ["import", str(dump)]):
        ran = subprocess.run([sys.executable, "-m", "tcgraph", *verb, "--database-url", replicated],
                             capture_output=True, text=True, timeout=120)
        results.append(ran)
    results.append(serve_refused("--database-url", replicated))
    for result in results:
        assert result.returncode == 1, result.stderr
        assert "refuses writes (cannot execute" in result.stderr
        assert "a hot standby or a read-only role" in result.stderr
        assert "Traceback" not in result.stderr and "http://" not in result.stderr


async def test_subscriptions_through_pgbouncer_with_a_direct_listener(
        pool: asyncpg.Pool, database_url: str, pgbouncer: PgBouncer) -> None:
    pending = FakeTask(task_group_id="group-live", state="pending")
    await store(pool, [pending])
    bounced_url = pgbouncer.url(database_name(database_url))
    # Reads (snapshots, the log, the tasks) through transaction pooling; LISTEN direct.
    settings = Settings(database_url=bounced_url, listen_database_url=database_url,
                        statement_cache_size=0)
    app = create_app(settings, bounced_url)
    with serving(app) as url:
        assert app.state.hub.listen_url == database_url
        async with ws_connected(url) as client:
            await client.subscribe("live", GROUP_CHANGES, g="group-live")
            (opening,) = await changes(client, "live", 1)
            assert opening["task"]["status"]["state"] == "PENDING"
            await store(pool, [FakeTask(task_id=pending.task_id, task_group_id="group-live",
                                        state="running")])
            (change,) = await changes(client, "live", 1)
            assert change["taskId"] == pending.task_id
            assert change["task"]["status"]["state"] == "RUNNING"
            assert change["cursor"] != opening["cursor"]
