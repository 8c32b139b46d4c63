"""Subscriptions fed by a real follower: the recorded pulse messages of a real deployment
through a real RabbitMQ, watched by a subscriber per task group from before the first
message, on two `tcgraph serve` processes sharing one database."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.subscriptions.wsclient import Client, change_of, connected
from ingest.conftest import (  # noqa: F401  (fixtures)
    broker, follow_options, following, prepare_queue, reached, recording, upstream,
)
from ingest.oracle import comparable_status
from servers import serve_process
from services.rabbitmq import RabbitMQ
from services.replay import Recording, declare_exchanges, publish, sentinel
from tcgraph.api.subscriptions.cursors import encode
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.store.queries.task_changes import Position
from waiting import eventually_async

STATUS_FIELDS = ("taskId provisionerId workerType taskQueueId schedulerId projectId "
                 "taskGroupId priority deadline expires retriesLeft state")
RUN_FIELDS = ("runId state reasonCreated reasonResolved workerGroup workerId takenUntil "
              "scheduled started resolved")
STREAM = f"""
subscription($g: ID!, $after: String) {{
  taskGroupChanges(taskGroupId: $g, after: $after) {{
    cursor taskId task {{ status {{ {STATUS_FIELDS} runs {{ {RUN_FIELDS} }} }} }}
  }}
}}"""


def as_queue_status(status: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL TaskStatus as queue.status answers it (states in lower case, no nulls)."""
    shown = {k: v for k, v in status.items() if k != "runs" and v is not None}
    shown["state"] = shown["state"].lower()
    shown["runs"] = [{k: (v.lower() if k == "state" else v) for k, v in run.items()
                      if v is not None} for run in status["runs"]]
    return comparable_status({"status": shown})


async def last_cursors(database_url: str) -> dict[str, str]:
    """Each group's newest logged change, as the cursor of its TaskChange."""
    conn = await asyncpg.connect(database_url)
    try:
        # Ordered by the column c.xid (xid8), not by the output column `xid`, its text,
        # which an unqualified name would mean: as text, '999' sorts after '1000'.
        rows = await conn.fetch("""
            SELECT DISTINCT ON (c.task_group_id) c.task_group_id, c.xid::text AS xid, c.seq
            FROM task_changes c ORDER BY c.task_group_id, c.xid DESC, c.seq DESC""")
    finally:
        await conn.close()
    return {r["task_group_id"]: encode(Position(int(r["xid"]), r["seq"])) for r in rows}


async def horizon(database_url: str) -> str:
    """A cursor before every change to come: the position of no change yet logged."""
    conn = await asyncpg.connect(database_url)
    try:
        xmin = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
    finally:
        await conn.close()
    return encode(Position(int(xmin), 0))


async def read_until(client: Client, targets: dict[str, str],
                     into: dict[str, list[dict[str, Any]]]) -> None:
    """Read every operation's changes (the operation id is its group) until each has
    reached its group's target cursor."""
    pending = {g for g, cursor in targets.items()
               if g in into and (not into[g] or into[g][-1]["cursor"] != cursor)}
    while pending:
        message = await client.receive()
        group = message["id"]
        into[group].append(change_of(message))
        if into[group][-1]["cursor"] == targets[group]:
            pending.discard(group)


async def test_streams_of_a_replayed_deployment_end_as_queue_status_says(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    groups = sorted({s["status"]["taskGroupId"] for s in recording.statuses.values()})
    await declare_exchanges(broker.url, [EXCHANGE_PREFIX + name for name in EXCHANGES])
    options = follow_options(broker.url, upstream)
    await prepare_queue(options)
    # Midway, once every group has had a message: a subscriber that received nothing
    # yet holds no cursor to resume with (it would subscribe afresh instead).
    firsts: dict[str, int] = {}
    for index, message in enumerate(recording.messages):
        parts = message.routing_key.split(".")
        if len(parts) > 8:  # a task's message (not a task group's)
            firsts.setdefault(parts[8], index)
    half = max(len(recording.messages) // 2, *(firsts[g] + 1 for g in groups))
    first_marker, last_marker = sentinel(1), sentinel(2)
    whole: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
    parted: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
    args = ("--database-url", database_url)
    with serve_process(*args) as one, serve_process(*args) as other:
        async with connected(one.url) as watcher:
            async with connected(one.url) as leaver:
                # Both from one position before the first message (a snapshot would
                # be each subscription's own, taken whenever the server gets to it).
                start = await horizon(database_url)
                for group in groups:
                    await watcher.subscribe(group, STREAM, g=group, after=start)
                    await leaver.subscribe(group, STREAM, g=group, after=start)
                async with following(database_url, options) as pool:
                    await publish(broker.url, [*recording.messages[:half], first_marker])
                    await eventually_async(lambda: reached(pool, first_marker),
                                           what="the first half")
                    targets = await last_cursors(database_url)
                    await read_until(leaver, targets, parted)
            assert all(parted.values())
            # The leaver is away while the second half is followed.
            async with following(database_url, options) as pool:
                await publish(broker.url, [*recording.messages[half:], last_marker])
                await eventually_async(lambda: reached(pool, last_marker), what="the second half")
            targets = await last_cursors(database_url)
            async with connected(other.url) as returning:
                for group in groups:
                    await returning.subscribe(group, STREAM, g=group,
                                              after=parted[group][-1]["cursor"])
                await read_until(returning, targets, parted)
            await read_until(watcher, targets, whole)
    statuses = {task_id: comparable_status(s) for task_id, s in recording.statuses.items()}
    for group in groups:
        keys = [(c["cursor"], c["taskId"]) for c in whole[group]]
        assert len(keys) == len(set(keys)), group
        got = [(c["cursor"], c["taskId"]) for c in parted[group]]
        assert got == keys, (group, [k for k in got if k not in keys],
                             [k for k in keys if k not in got], len(got), len(keys))
        latest = {c["taskId"]: c["task"] for c in whole[group]}
        recorded = {t for t, s in statuses.items() if s["status"]["taskGroupId"] == group}
        assert recorded <= set(latest), group
        for task_id in recorded:
            assert as_queue_status(latest[task_id]["status"]) == statuses[task_id], task_id
