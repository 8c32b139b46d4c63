"""A valid message the store refuses: set aside alone, every other message written.

The store is made to refuse one task (a CHECK constraint added to this test's own
database, the fault injected); its messages are mixed into the recording. The
batch that holds them fails every time it is written as a whole, so the follower
must isolate them instead of retrying for ever.
"""

from __future__ import annotations

import asyncpg
import httpx
import orjson

from ingest.test_pulse import replay
from scraped import samples, value
from services.rabbitmq import RabbitMQ
from services.replay import Message, Recording
from tcgraph.ingest.events import EXCHANGE_PREFIX
from tcgraph.ingest.follow import REFUSED_BY_STORE

REFUSED_TASK = "RefusedRefusedRefused0"
GROUP = "RefusedGroupRefusedGr0"


def pending(run_count: int) -> Message:
    """A task-pending message of the refused task, valid by its schema."""
    runs = [{"runId": i, "state": "pending" if i == run_count - 1 else "exception",
             "reasonCreated": "scheduled" if i == 0 else "retry",
             "scheduled": "2026-12-01T00:00:00.000Z"} for i in range(run_count)]
    status = {"taskId": REFUSED_TASK, "taskGroupId": GROUP, "provisionerId": "p",
              "workerType": "w", "taskQueueId": "p/w", "schedulerId": "s",
              "projectId": "none", "state": "pending", "retriesLeft": 5,
              "deadline": "2026-12-02T00:00:00.000Z", "expires": "2027-12-01T00:00:00.000Z",
              "runs": runs}
    return Message(EXCHANGE_PREFIX + "task-pending",
                   f"primary.{REFUSED_TASK}.{run_count - 1}._._._.s.{GROUP}._", (),
                   orjson.dumps({"version": 1, "runId": run_count - 1, "status": status}))


async def refused_count(metrics: httpx.AsyncClient) -> float:
    """Messages set aside as refused by the store, as GET /metrics reports them."""
    found = samples(await metrics.get("/metrics"))
    return value(found, "tcgraph_follower_errors_total", code=REFUSED_BY_STORE)


async def test_a_message_the_store_refuses_is_set_aside_and_the_rest_written(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording,
        metrics: httpx.AsyncClient) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for table in ("tasks", "mirror_waiting"):
            await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT refuse_one "
                               f"CHECK (task_id <> '{REFUSED_TASK}')")
    finally:
        await conn.close()
    bad = [pending(1), pending(2)]
    messages = list(recording.messages)
    messages.insert(len(messages) // 3, bad[0])
    messages.insert(2 * len(messages) // 3, bad[1])
    before = await refused_count(metrics)
    # Every recorded answer: no good message was lost with the refused ones.
    assert await replay(database_url, broker, upstream, recording, messages) == []
    assert await refused_count(metrics) - before == len(bad)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT errors FROM mirror_state") == len(bad)
        rejected = await conn.fetch(
            "SELECT exchange, routing_key, problem, body FROM mirror_rejected ORDER BY id")
    finally:
        await conn.close()
    assert [(r["exchange"], r["routing_key"], r["body"]) for r in rejected] == [
        (b.exchange, b.routing_key, b.body) for b in bad]
    assert all("refuse_one" in r["problem"] for r in rejected), rejected[0]["problem"]
