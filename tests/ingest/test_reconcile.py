"""Reconciliation against a real RabbitMQ and the replay upstream: lost messages repaired
through the REST API, within the budget, never rolling a task back.

Each test publishes the recording (or part of it) and a sentinel; once the sentinel's
batch is committed and a reconciliation pass that started after it is complete, every
queue.task, queue.status, listTaskGroup and index.findTask answer must be the recorded one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from waiting import eventually_async
from ingest.conftest import following, prepare_queue, reached
from ingest.drift import (RATE, database_now, drifting_options, dropped, reconciled_since,
                          repaired)
from ingest.oracle import mismatches
from ingest.test_pulse import ALL_EXCHANGES
from servers import asgi_client, serving
from services.rabbitmq import RabbitMQ
from services.replay import (Message, Recording, declare_exchanges, publish, sentinel,
                             upstream_app)
from tcgraph.api import recent_reads
from tcgraph.config import Settings
from tcgraph.ingest.reconcile import ReconcileOptions, Reconciler
from tcgraph.server import create_app


async def follow_and_reconcile(database_url: str, broker: RabbitMQ, upstream: str,
                               rec: Recording, messages: list[Message], rate: float = RATE
                               ) -> tuple[list[str], int]:
    """Follow `messages`, wait for a pass after the sentinel; (mismatches, tasks repaired)."""
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = drifting_options(broker.url, upstream, rate=rate)
    await prepare_queue(options)
    marker = sentinel(1)
    await publish(broker.url, [*messages, marker])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        after = await database_now(pool)
        await eventually_async(lambda: reconciled_since(pool, after),
                               what="a pass after the sentinel")
        return await mismatches(pool, rec, database_url), await repaired(pool)


async def test_ten_percent_of_the_messages_lost_are_repaired(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    kept = dropped(recording.messages, 0.10, seed=16)
    assert len(recording.messages) - len(kept) > 100
    found, fixed = await follow_and_reconcile(database_url, broker, upstream, recording, kept)
    assert found == []
    assert fixed > 0  # the mirror was wrong, and reconciliation is what mended it


def _earliest_statuses(rec: Recording) -> dict[str, dict[str, Any]]:
    """Each task's status as its first message gave it: older than the recorded one."""
    first: dict[str, dict[str, Any]] = {}
    for m in rec.messages:
        body = orjson.loads(m.body)
        status = body.get("status")
        if status is not None and status["taskId"] not in first:
            first[status["taskId"]] = status
    return first


async def test_an_older_answer_from_the_upstream_never_rolls_a_task_back(
        database_url: str, broker: RabbitMQ, recording: Recording) -> None:
    old = _earliest_statuses(recording)
    by_group: dict[str, list[str]] = {}
    for task_id, definition in recording.definitions.items():
        by_group.setdefault(definition["taskGroupId"], []).append(task_id)

    served: list[str] = []

    async def stale(method: str, request: Request) -> Response | None:
        # Every status the upstream gives is the task's first (pending or unscheduled).
        if method in ("statuses", "listTaskGroup"):
            served.append(method)
        if method == "statuses":
            ids = (await request.json())["taskIds"]
            return JSONResponse({"statuses": [{"taskId": t, "status": old[t]}
                                              for t in dict.fromkeys(ids) if t in old]})
        if method == "listTaskGroup":
            group = request.path_params["taskGroupId"]
            return JSONResponse({"taskGroupId": group, "tasks": [
                {"task": recording.definitions[t], "status": old[t]}
                for t in sorted(by_group.get(group, [])) if t in old]})
        return None

    with serving(upstream_app(recording, intercept=stale)) as upstream:
        found, _ = await follow_and_reconcile(database_url, broker, upstream, recording,
                                              recording.messages)
    # The older answers were read (after the last message, too), and changed nothing
    # that a message had brought: every answer is still the recorded one.
    assert "statuses" in served and "listTaskGroup" in served
    assert found == []


async def test_an_upstream_failing_and_slow_during_reconciliation_gets_no_more_calls_than_the_budget(  # noqa: E501
        database_url: str, broker: RabbitMQ, recording: Recording) -> None:
    rate = 5.0
    stamps: list[float] = []
    failed: list[str] = []

    async def flaky(method: str, request: Request) -> Response | None:
        if method not in ("statuses", "listTaskGroup"):
            return None
        stamps.append(time.monotonic())
        if len(stamps) % 3 == 1:  # one call in three fails
            failed.append(method)
            return JSONResponse({"code": "InternalServerError", "message": "boom"},
                                status_code=503)
        await asyncio.sleep(0.05)  # answers, slowly
        return None

    kept = dropped(recording.messages, 0.10, seed=17)
    with serving(upstream_app(recording, intercept=flaky)) as upstream:
        found, fixed = await follow_and_reconcile(database_url, broker, upstream, recording,
                                                  kept, rate=rate)
    assert found == []
    assert fixed > 0 and failed
    # Every call took a token, a failing one too: never more than the bucket allows.
    span = stamps[-1] - stamps[0]
    assert len(stamps) <= rate * span + max(1.0, rate) + 1, (len(stamps), span)


async def test_index_paths_read_lately_are_asked_for_first_and_repaired(
        database_url: str, broker: RabbitMQ, recording: Recording) -> None:
    # One indexed task whose task-completed message was lost: its entry is missing.
    path, entry = next((p, e) for p, e in sorted(recording.found.items())
                       if ".latest." not in p)
    lost = [m for m in recording.messages
            if not (m.exchange.endswith("task-completed") and entry["taskId"] in m.routing_key)]
    calls: list[str] = []
    with serving(upstream_app(recording, calls=calls)) as upstream:
        await declare_exchanges(broker.url, ALL_EXCHANGES)
        options = drifting_options(broker.url, upstream, rate=0)  # nothing repairs it yet
        await prepare_queue(options)
        marker = sentinel(1)
        await publish(broker.url, [*lost, marker])
        async with following(database_url, options) as pool:
            await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
            app = create_app(Settings(database_url=database_url, allowed_hosts="tcgraph.test"),
                             database_url)
            async with asgi_client(app, pool) as client:
                missing = await client.get(f"/api/index/v1/task/{path}")
            assert missing.status_code == 404

            async def noted() -> bool:
                return bool(await pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM mirror_recent_reads WHERE kind = $1 "
                    "AND key = $2)", recent_reads.INDEX_PATH, path))

            await eventually_async(noted, what="the read noted")
            calls.clear()
            reconciler = Reconciler(pool, upstream, name="test", options=ReconcileOptions())
            try:
                await reconciler.one_pass()
            finally:
                await reconciler.close()
            async with asgi_client(app, pool) as client:
                found = await client.get(f"/api/index/v1/task/{path}")
    assert calls[0] == "findTasksAtIndex"  # before any other call of the pass
    assert found.status_code == 200 and found.json() == entry
