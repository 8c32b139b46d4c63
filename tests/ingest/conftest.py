"""Fixtures for the follower: a real RabbitMQ, the recording, a replay upstream, a follower."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from needs import need
from servers import asgi_client, serving
from services.rabbitmq import RabbitMQ, running_rabbitmq
from services.replay import Message, Recording, declare_queue, upstream_app
from tcgraph.config import Settings
from tcgraph.ingest.follow import FollowOptions, follow
from tcgraph.ingest.pulse import PulseOptions, bindings, queue_name
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool


@pytest.fixture(scope="session")
def recording() -> Recording:
    return Recording.load()


@pytest.fixture(scope="module")
def broker() -> Iterator[RabbitMQ]:
    need("rabbitmq")
    with running_rabbitmq() as b:
        yield b


@pytest.fixture(scope="module")
def upstream(recording: Recording) -> Iterator[str]:
    with serving(upstream_app(recording)) as url:
        yield url


@pytest.fixture
async def metrics(pool: asyncpg.Pool, settings: Settings,
                  database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of this process's GET /metrics, which an in-process follower reports to."""
    async with asgi_client(create_app(settings, database_url), pool) as client:
        yield client


def follow_options(broker_url: str, upstream_url: str, *, name: str | None = None,
                   backfill: bool = False, batch_size: int = 1000) -> FollowOptions:
    """Options for a follower with its own queue (unless `name` is given)."""
    queue = queue_name(broker_url, name or f"test-{uuid.uuid4().hex[:8]}")
    return FollowOptions(
        root_url=upstream_url, backfill=backfill,
        pulse=PulseOptions(url=broker_url, queue_name=queue, bindings=bindings(),
                           batch_size=batch_size))


@contextlib.asynccontextmanager
async def following(database_url: str, options: FollowOptions, **kwargs: object
                    ) -> AsyncIterator[asyncpg.Pool]:
    """A follower running in this event loop for the duration of the block."""
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=4))
    task = asyncio.create_task(follow(pool, options, **kwargs))  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()


async def prepare_queue(options: FollowOptions) -> None:
    """Declare and bind the follower's queue now, as a follower that ran before would
    have: messages published from here on wait in it for the follower."""
    await declare_queue(options.pulse.url, options.pulse.queue_name,
                        [(b.exchange, b.routing_key) for b in options.pulse.bindings])


async def messages_written(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    """Messages the follower has committed (a redelivered batch counts again)."""
    return await conn.fetchval("SELECT COALESCE(max(messages), 0) FROM mirror_state") or 0


async def batches_written(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    """Batches the follower has committed."""
    return await conn.fetchval("SELECT COALESCE(max(batches), 0) FROM mirror_state") or 0


async def reached(conn: asyncpg.Pool | asyncpg.Connection, marker: Message) -> bool:
    """Whether the batch ending with `marker` (published after everything else) is committed."""
    key = await conn.fetchval("SELECT last_routing_key FROM mirror_state")
    return bool(key == marker.routing_key)
