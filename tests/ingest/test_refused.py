"""A valid message the store refuses: set aside alone, every other message written.

The store is made to refuse one task: a CHECK constraint added to this test's own
database (the fault injected), or a label over PostgreSQL's index row limit (as
Taskcluster allows). The batch that holds its messages fails every time it is
written as a whole, so the follower must isolate them instead of retrying for ever.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import asyncpg
import httpx
import orjson

from ingest.dumps import LONG_LABEL
from ingest.test_pulse import replay
from servers import serving
from scraped import samples, value
from services.rabbitmq import RabbitMQ
from services.replay import Message, Recording, upstream_app
from tcgraph.ingest.events import EXCHANGE_PREFIX
from tcgraph.ingest.follow import REFUSED_BY_STORE

REFUSED_TASK = "RefusedRQfCsedRefusedA"  # Taskcluster's slugid pattern
GROUP = "RefusedGQoCpRefusedGrA"


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


async def test_a_label_over_postgresqls_index_row_limit_sets_its_messages_aside(
        database_url: str, broker: RabbitMQ, recording: Recording,
        metrics: httpx.AsyncClient) -> None:
    # Not an integrity or data error (SQLSTATE 54000, program limit exceeded): it is
    # what the messages' task holds all the same, and must not stop the stream.
    task_id = next(t for t in (_task_of(m) for m in recording.messages)
                   if t in recording.definitions)
    definition = copy.deepcopy(recording.definitions[task_id])
    definition.setdefault("tags", {})["label"] = LONG_LABEL
    long = replace(recording, definitions={**recording.definitions, task_id: definition})
    before = await refused_count(metrics)
    with serving(upstream_app(long)) as upstream_url:
        found = await replay(database_url, broker, upstream_url, recording, recording.messages)
    # Every other task's answers are the recorded ones.
    assert found and all(task_id in line for line in found), found
    about_task = [m for m in recording.messages if _task_of(m) == task_id]
    conn = await asyncpg.connect(database_url)
    try:
        rejected = await conn.fetch(
            "SELECT exchange, routing_key, problem, body FROM mirror_rejected ORDER BY id")
    finally:
        await conn.close()
    assert sorted((r["exchange"], r["routing_key"], r["body"]) for r in rejected) == sorted(
        (m.exchange, m.routing_key, m.body) for m in about_task)
    assert all("ProgramLimitExceededError (SQLSTATE 54000)" in r["problem"] for r in rejected)
    assert await refused_count(metrics) - before == len(about_task)


def _task_of(message: Message) -> str | None:
    """The task a task message is about (its routing key's second word)."""
    parts = message.routing_key.split(".")
    return parts[1] if parts[0] == "primary" and len(parts) > 8 else None
