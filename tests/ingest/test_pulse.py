"""The follower against a real RabbitMQ, fed the recorded messages of a real deployment.

Each test publishes the recording's messages to the real exchange names (with their
routing keys and CC headers), then a sentinel message; once the follower has committed
the sentinel's batch, every queue.task, queue.status, listTaskGroup and index.findTask
answer is checked against the recorded one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import asyncpg
import httpx
import orjson
import pytest

from ingest.conftest import batches_written, follow_options, following, prepare_queue, reached
from ingest.drift import gap_recorded
from ingest.oracle import mismatches
from needs import need
from scraped import samples, value
from servers import serving
from services.rabbitmq import RabbitMQ, running_rabbitmq
from services.replay import (Message, Recording, declare_exchanges, publish, sentinel,
                             upstream_app)
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.ingest import gaps
from tcgraph.ingest.follow import INVALID_MESSAGE
from waiting import eventually_async

ALL_EXCHANGES = [EXCHANGE_PREFIX + name for name in EXCHANGES]


async def replay(database_url: str, broker: RabbitMQ, upstream: str, rec: Recording,
                 messages: list[Message]) -> list[str]:
    """Follow `messages` into the database; the answers that differ from the recording."""
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = follow_options(broker.url, upstream)
    await prepare_queue(options)
    marker = sentinel(1)
    await publish(broker.url, [*messages, marker])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        return await mismatches(pool, rec, database_url)


async def test_the_recording_in_order_gives_every_recorded_answer(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    assert await replay(database_url, broker, upstream, recording, recording.messages) == []


async def test_shuffled_and_duplicated_messages_give_the_same_answers(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    shuffled = recording.messages + random.Random(8).sample(recording.messages, 400)
    random.Random(9).shuffle(shuffled)
    assert await replay(database_url, broker, upstream, recording, shuffled) == []


BAD = [
    Message(EXCHANGE_PREFIX + "task-pending", "primary.bad-json", (), b"{not json"),
    Message(EXCHANGE_PREFIX + "task-running", "primary.no-status", (),
            orjson.dumps({"version": 1, "runId": 0})),
    Message(EXCHANGE_PREFIX + "task-completed", "primary.bad-run", (), orjson.dumps(
        {"version": 1, "runId": 0, "status": {
            "taskId": "AAAAAAAAQACAAAAAAAAAAA", "taskGroupId": "AAAAAAAAQACAAAAAAAAAAA",
            "retriesLeft": 5, "runs": [{"runId": 0, "state": "finished",
                                        "reasonCreated": "scheduled",
                                        "scheduled": "2026-12-01T00:00:00.000Z"}]}})),
]


async def follower_figures(metrics: httpx.AsyncClient) -> dict[str, float]:
    """The follower's figures as GET /metrics reports them (the follower runs in this process)."""
    found = samples(await metrics.get("/metrics"))
    figures = {"errors": value(found, "tcgraph_follower_errors_total", code=INVALID_MESSAGE),
               "lag": value(found, "tcgraph_follower_lag_seconds")}
    for name in EXCHANGES:
        figures[name] = value(found, "tcgraph_follower_messages_total",
                              exchange=EXCHANGE_PREFIX + name)
    return figures


async def test_invalid_messages_are_counted_and_set_aside_without_stopping_the_stream(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording,
        metrics: httpx.AsyncClient) -> None:
    messages = list(recording.messages)
    for i, bad in enumerate(BAD):
        messages.insert(100 + 300 * i, bad)
    before = await follower_figures(metrics)
    assert await replay(database_url, broker, upstream, recording, messages) == []
    after = await follower_figures(metrics)
    # /metrics moved with what was handled: every message by exchange (the sentinel
    # is a task-group-resolved message), the invalid ones as errors, and the lag.
    assert after["errors"] - before["errors"] == len(BAD)
    for name in EXCHANGES:
        sent = sum(m.exchange == EXCHANGE_PREFIX + name for m in messages)
        sent += name == "task-group-resolved"
        assert after[name] - before[name] == sent, name
    assert after["lag"] > 0  # the recording's statuses are in the past
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT errors FROM mirror_state") == len(BAD)
        rejected = await conn.fetch(
            "SELECT exchange, routing_key, problem, body FROM mirror_rejected ORDER BY id")
    finally:
        await conn.close()
    assert [(r["exchange"], r["routing_key"], r["body"]) for r in rejected] == [
        (b.exchange, b.routing_key, b.body) for b in BAD]
    assert "not valid JSON" in rejected[0]["problem"]
    assert "status" in rejected[1]["problem"]
    assert "'finished' is not a run state" in rejected[2]["problem"]


@pytest.fixture
def fresh_broker() -> Iterator[RabbitMQ]:
    need("rabbitmq")
    with running_rabbitmq() as b:
        yield b


async def test_a_follower_started_before_the_exchanges_exist_binds_once_they_do(
        database_url: str, fresh_broker: RabbitMQ, upstream: str, recording: Recording
) -> None:
    options = follow_options(fresh_broker.url, upstream)
    async with following(database_url, options) as pool:
        # The follower is refused (404 NOT_FOUND on QueueBind) until the exchanges exist;
        # a probe published until one is committed says it has bound since.
        await declare_exchanges(fresh_broker.url, ALL_EXCHANGES)
        probe = sentinel(0)

        async def probe_committed() -> bool:
            if await reached(pool, probe):
                return True
            await publish(fresh_broker.url, [probe])
            return False

        await eventually_async(probe_committed, what="the follower to bind")
        marker = sentinel(1)
        await publish(fresh_broker.url, [*recording.messages, marker])
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        assert await mismatches(pool, recording, database_url) == []


async def test_a_broker_restart_loses_and_duplicates_nothing(
        database_url: str, fresh_broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    await declare_exchanges(fresh_broker.url, ALL_EXCHANGES)
    options = follow_options(fresh_broker.url, upstream, batch_size=25)
    await prepare_queue(options)
    half = len(recording.messages) // 2
    await publish(fresh_broker.url, recording.messages[:half])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: _batches(pool, 5), what="five committed batches")
        fresh_broker.stop()
        fresh_broker.start()
        marker = sentinel(1)
        await publish(fresh_broker.url, [*recording.messages[half:], marker])
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        assert await mismatches(pool, recording, database_url) == []
        # The outage is recorded as a gap (persistent messages in a durable queue
        # survived it, but what Taskcluster failed to publish meanwhile would not).
        assert await gap_recorded(pool, gaps.BROKER_UNREACHABLE)


async def _batches(pool: asyncpg.Pool, count: int) -> bool:
    return await batches_written(pool) >= count


async def test_an_upstream_without_the_batch_route_is_asked_task_by_task(
        database_url: str, broker: RabbitMQ, recording: Recording) -> None:
    calls: list[str] = []
    with serving(upstream_app(recording, batch_route=False, calls=calls)) as old_upstream:
        assert await replay(database_url, broker, old_upstream, recording,
                            recording.messages) == []
    assert calls.count("tasks") == 1  # asked once, then never again
    assert calls.count("task") == len(recording.definitions)
