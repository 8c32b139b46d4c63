"""The follower's write path against an upstream that lies, gives bad definitions or
never gives one.

The upstream is a real HTTP server answering `queue.tasks` as each test says, and
counting the calls (or the recording's replay upstream, with a real RabbitMQ);
the store is a real PostgreSQL. What is checked is what was stored, and how many
calls a given number of fetch rounds cost.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.dumps import GROUP, LONG_LABEL, definition, run, status, tid
from ingest.test_pulse import replay
from servers import serving
from services.rabbitmq import RabbitMQ
from services.replay import Recording
from services.replay import upstream_app as replay_upstream
from tcgraph.ingest import shapes
from tcgraph.ingest.events import EXCHANGE_PREFIX
from tcgraph.ingest.mirror import Delivery, Mirror
from tcgraph.ingest.upstream import Upstream
from tcgraph.store import writes

Answer = Callable[[list[str]], list[object]]
VICTIM, ASKED, OTHER = tid(1), tid(2), tid(3)
ROUNDS = 50
# Long enough that no round of a test comes after the next attempt is due.
RETRY_MIN_S, RETRY_MAX_S = 600.0, 6000.0


class Calls:
    """The ids of each `queue.tasks` call the upstream answered."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []


def upstream_app(answer: Answer, calls: Calls) -> Starlette:
    async def tasks(request: Request) -> Response:
        ids = (await request.json())["taskIds"]
        calls.asked.append(ids)
        return JSONResponse({"tasks": answer(ids)})

    return Starlette(routes=[Route("/api/queue/v1/tasks", tasks, methods=["POST"])])


@pytest.fixture
async def mirror_of(pool: asyncpg.Pool) -> AsyncIterator[Callable[[str], Mirror]]:
    opened: list[Upstream] = []

    def make(url: str) -> Mirror:
        opened.append(Upstream(url, max_retries=0))
        return Mirror(pool, opened[-1], queue_name="q", backfill=False,
                      started=datetime.now(UTC), retry_min_s=RETRY_MIN_S,
                      retry_max_s=RETRY_MAX_S)

    yield make
    for upstream in opened:
        await upstream.close()


async def store_task(pool: asyncpg.Pool, task_id: str, task: dict[str, Any]) -> None:
    async with pool.acquire() as conn:
        await writes.upsert_tasks_with_statuses(conn, [(
            shapes.task_row(task_id, task), shapes.status_row(status(task_id, [run(0)]), task_id))])


async def wait_for_definition(pool: asyncpg.Pool, *task_ids: str) -> None:
    """Statuses of `task_ids` waiting for their definition, as the follower keeps them."""
    async with pool.acquire() as conn:
        await writes.upsert_waiting(conn, [writes.WaitingRow(
            group=GROUP, status=shapes.status_row(status(t, [run(0)]), t),
            expires=shapes.time(status(t, []), "expires")[0])  # type: ignore[index]
            for t in task_ids])


async def waiting(pool: asyncpg.Pool, task_id: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT attempts, problem, EXTRACT(EPOCH FROM next_attempt - now()) AS due_in "
        "FROM mirror_waiting WHERE task_id = $1", task_id)


async def test_an_answer_under_an_id_not_asked_for_is_not_stored_and_retries_back_off(
        pool: asyncpg.Pool, mirror_of: Callable[[str], Mirror]) -> None:
    victim = definition(tags={"label": "the victim"})
    await store_task(pool, VICTIM, victim)
    await wait_for_definition(pool, ASKED)
    calls = Calls()
    lie = definition(tags={"label": "a lie"})
    with serving(upstream_app(lambda ids: [{"taskId": VICTIM, "task": lie}], calls)) as url:
        mirror = mirror_of(url)
        stored = [await mirror.fetch_waiting() for _ in range(ROUNDS)]
        assert stored == [0] * ROUNDS
        # One call: the id that did not come is not due again for RETRY_MIN_S.
        assert calls.asked == [[ASKED]]
        held = await waiting(pool, ASKED)
        assert held["attempts"] == 1 and held["problem"] == "the upstream did not give it"
        assert RETRY_MIN_S / 2 < held["due_in"] <= RETRY_MIN_S
        # Each further attempt waits twice as long, up to RETRY_MAX_S.
        for attempt in (2, 3):
            await pool.execute("UPDATE mirror_waiting SET next_attempt = now()")
            for _ in range(ROUNDS):
                await mirror.fetch_waiting()
            assert len(calls.asked) == attempt
            held = await waiting(pool, ASKED)
            assert held["attempts"] == attempt
            assert RETRY_MIN_S * 2 ** (attempt - 2) < held["due_in"] <= RETRY_MIN_S * 2 ** (
                attempt - 1)  # twice as long as the last pause
        await pool.execute("UPDATE mirror_waiting SET next_attempt = now(), attempts = 1000")
        await mirror.fetch_waiting()
        assert RETRY_MAX_S / 2 < (await waiting(pool, ASKED))["due_in"] <= RETRY_MAX_S
        # The batch path, for a message of the task: the lie is not stored either.
        message = {"version": 1, "runId": 0, "status": status(ASKED, [run(0, "running")])}
        await mirror.write([Delivery(EXCHANGE_PREFIX + "task-running",
                                     f"primary.{ASKED}.0._._._._.{GROUP}._",
                                     orjson.dumps(message))])
    assert orjson.loads(await pool.fetchval(
        "SELECT definition::text FROM tasks WHERE task_id = $1", VICTIM))["tags"] == victim["tags"]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_a_definition_that_disagrees_with_its_status_is_not_stored(
        pool: asyncpg.Pool, mirror_of: Callable[[str], Mirror]) -> None:
    await wait_for_definition(pool, ASKED, OTHER)
    elsewhere = definition(group="EEEEEEEEQECEEEEEEEEEEA")
    later = definition(expires="2099-01-01T00:00:00.000Z")
    answers = {ASKED: elsewhere, OTHER: later}
    calls = Calls()
    with serving(upstream_app(lambda ids: [{"taskId": t, "task": answers[t]} for t in ids],
                              calls)) as url:
        mirror = mirror_of(url)
        for _ in range(ROUNDS):
            assert await mirror.fetch_waiting() == 0
    assert len(calls.asked) == 1
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    assert "taskGroupId EEEEEEEEQECEEEEEEEEEEA" in (await waiting(pool, ASKED))["problem"]
    assert "expires 2099-01-01" in (await waiting(pool, OTHER))["problem"]


async def test_a_definition_the_store_refuses_leaves_the_others_stored(
        pool: asyncpg.Pool, mirror_of: Callable[[str], Mirror]) -> None:
    await wait_for_definition(pool, ASKED, OTHER)
    answers = {ASKED: definition(tags={"label": LONG_LABEL}), OTHER: definition()}
    calls = Calls()
    with serving(upstream_app(lambda ids: [{"taskId": t, "task": answers[t]} for t in ids],
                              calls)) as url:
        mirror = mirror_of(url)
        assert await mirror.fetch_waiting() == 1
        for _ in range(ROUNDS):
            assert await mirror.fetch_waiting() == 0
    assert len(calls.asked) == 1
    assert await pool.fetchval("SELECT array_agg(task_id) FROM tasks") == [OTHER]
    assert await pool.fetchval("SELECT state FROM tasks") == "completed"  # its status, promoted
    held = await waiting(pool, ASKED)
    assert held["attempts"] == 1
    assert "the store refused it: ProgramLimitExceededError (SQLSTATE 54000)" in held["problem"]


async def test_a_definition_with_non_string_routes_or_metadata_is_not_stored_by_the_follower(
        database_url: str, broker: RabbitMQ, recording: Recording) -> None:
    task_id = next(t for t in recording.definitions
                   if any(f"primary.{t}." in m.routing_key for m in recording.messages))
    bad = copy.deepcopy(recording.definitions[task_id])
    bad["routes"] = [*bad.get("routes", []), 5, None]
    bad["metadata"]["owner"] = None
    served = replace(recording, definitions={**recording.definitions, task_id: bad})
    with serving(replay_upstream(served)) as url:
        found = await replay(database_url, broker, url, recording, recording.messages)
    # Only that task's answers differ: it is not served, rather than served broken.
    assert found and all(task_id in line for line in found), found
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1",
                                   task_id) == 0
        problem = await conn.fetchval("SELECT problem FROM mirror_waiting WHERE task_id = $1",
                                      task_id)
    finally:
        await conn.close()
    assert problem is not None and f"routes[{len(bad['routes']) - 2}]: expected a string, " \
        "got the number 5" in problem, problem


async def test_odd_items_in_an_answer_are_skipped_and_the_asked_ones_stored(
        pool: asyncpg.Pool, mirror_of: Callable[[str], Mirror]) -> None:
    await wait_for_definition(pool, ASKED)
    odd: list[object] = [["a list"], "text", {"taskId": ["unhashable"]}, {"taskId": None},
                         {"taskId": ASKED, "task": definition()}]
    calls = Calls()
    with serving(upstream_app(lambda ids: odd, calls)) as url:
        assert await mirror_of(url).fetch_waiting() == 1
    assert await pool.fetchval("SELECT array_agg(task_id) FROM tasks") == [ASKED]
    assert await pool.fetchval("SELECT count(*) FROM mirror_waiting") == 0
