"""Backfill against a replay upstream made to misbehave: one group or namespace that
cannot be read never holds up the others, and paging that would never end is ended.

The upstream is the recording's (services.replay), with one route answered by a
misbehaving handler that counts its calls; the store is a real PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import subprocess
import sys
from collections.abc import Callable

import asyncpg
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from waiting import eventually_async
from ingest.conftest import follow_options, following, prepare_queue
from ingest.test_pulse import ALL_EXCHANGES
from servers import serving
from services.rabbitmq import RabbitMQ
from services.replay import Message, Recording, declare_exchanges, publish, upstream_app
from tcgraph.ingest import backfill
from tcgraph.ingest.events import EXCHANGE_PREFIX
from tcgraph.ingest.upstream import MAX_EMPTY_PAGES, Upstream, UpstreamMisbehaved
from tcgraph.store import writes

# Sorts before every recorded group, so it is queued (and tried) first.
BAD_GROUP = "BadGroupQxCBadGroupxxA"
RETRY = writes.GroupRetry(attempts=3, first_s=0.0, failed_every_s=3600.0)


class Counted:
    """A misbehaving handler and how many times it was called."""

    def __init__(self, answer: Callable[[int, Request], dict[str, Any]]) -> None:
        self.calls = 0
        self.answer = answer

    async def handle(self, request: Request) -> Response:
        self.calls += 1
        return JSONResponse(self.answer(self.calls, request))


def misbehaving(recording: Recording, path: str, handler: Counted) -> Starlette:
    """The recording's upstream, except `path`, which `handler` answers."""
    return Starlette(routes=[Route(path, handler.handle), Mount("/", app=upstream_app(recording))])


def empty_pages_for_ever(calls: int, request: Request) -> dict[str, Any]:
    return {"taskGroupId": BAD_GROUP, "tasks": [], "continuationToken": f"t{calls}"}


async def test_a_group_whose_pages_never_end_is_failed_after_bounded_attempts(
        pool: asyncpg.Pool, recording: Recording) -> None:
    good = sorted(recording.groups)
    async with pool.acquire() as conn:
        assert await writes.claim_groups(conn, [BAD_GROUP]) == [BAD_GROUP]
        assert sorted(await writes.claim_groups(conn, good)) == good
    bad = Counted(empty_pages_for_ever)
    app = misbehaving(recording, f"/api/queue/v1/task-group/{BAD_GROUP}/list", bad)
    with serving(app) as url:
        upstream = Upstream(url, max_retries=0)
        try:
            for _ in range(10):
                await backfill.queued_groups(pool, upstream, retry=RETRY)
        finally:
            await upstream.close()
    rows = {r["task_group_id"]: r for r in await pool.fetch("SELECT * FROM mirror_groups")}
    # Every other group was walked, although the first one queued never could be.
    for group in good:
        assert rows[group]["backfilled"] is not None, group
        assert rows[group]["tasks"] == len(recording.groups[group])
    failed = rows[BAD_GROUP]
    assert failed["backfilled"] is None and failed["failed"] is not None
    assert failed["attempts"] == RETRY.attempts
    assert failed["problem"] == (
        f"UpstreamMisbehaved: listTaskGroup {BAD_GROUP}: {MAX_EMPTY_PAGES} empty pages in a "
        "row, each with a continuation token; the walk was given up")
    # Bounded: a walk gives up after MAX_EMPTY_PAGES pages, and a failed group is not due.
    assert bad.calls == RETRY.attempts * MAX_EMPTY_PAGES
    assert await pool.fetchval(
        "SELECT next_attempt - now() > interval '59 minutes' FROM mirror_groups "
        "WHERE task_group_id = $1", BAD_GROUP)


@pytest.mark.parametrize("answer, problem", [
    (lambda calls, r: {"tasks": [], "continuationToken": "again"},
     "continuation token 'again' came back after 2 pages"),
    (lambda calls, r: {"tasks": [], "continuationToken": 7},
     "a continuation token that is the number 7"),
    (lambda calls, r: {"tasks": [{"nonsense": calls}], "continuationToken": f"t{calls}"},
     "more than 5 pages"),
])
async def test_paging_that_would_never_end_is_ended(
        pool: asyncpg.Pool, recording: Recording, answer: Callable[[int, Request], dict[str, Any]],
        problem: str) -> None:
    bad = Counted(answer)
    app = misbehaving(recording, f"/api/queue/v1/task-group/{BAD_GROUP}/list", bad)
    with serving(app) as url:
        upstream = Upstream(url, max_retries=0, max_pages=5)
        try:
            with pytest.raises(UpstreamMisbehaved) as raised:
                await backfill.task_group(pool, upstream, BAD_GROUP)
        finally:
            await upstream.close()
    assert str(raised.value) == (
        f"listTaskGroup {BAD_GROUP}: {problem}; the walk was given up")
    assert bad.calls <= 5


def listed_under_itself(calls: int, request: Request) -> dict[str, Any]:
    namespace = request.path_params["namespace"]
    return {"namespaces": [{"namespace": namespace, "name": namespace.rsplit(".", 1)[-1],
                            "expires": "2099-01-01T00:00:00.000Z"}]}


async def test_a_namespace_listed_under_itself_ends_the_walk_and_the_command_goes_on(
        database_url: str, recording: Recording) -> None:
    bad = Counted(listed_under_itself)
    app = misbehaving(recording, "/api/index/v1/namespaces/{namespace:path}", bad)
    group = sorted(recording.groups)[0]
    with serving(app) as url:
        done = subprocess.run(
            [sys.executable, "-m", "tcgraph", "backfill", "--database-url", database_url,
             "--root-url", url, "--index", "gecko", "--task-group", group],
            capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    # Given first, the group is copied all the same.
    assert f"task group {group}: {len(recording.groups[group])} tasks" in done.stderr
    assert ("index gecko: failed: UpstreamMisbehaved: listNamespaces 'gecko': 'gecko' is not "
            "an index path below it, or was listed already; the walk was given up"
            in done.stderr), done.stderr
    assert bad.calls == 1


def pending(task_id: str, group: str) -> Message:
    """A task-pending message of a task the upstream does not know, in `group`."""
    status = {"taskId": task_id, "taskGroupId": group, "provisionerId": "p", "workerType": "w",
              "taskQueueId": "p/w", "schedulerId": "s", "projectId": "none",
              "state": "pending", "retriesLeft": 5, "deadline": "2026-12-02T00:00:00.000Z",
              "expires": "2027-12-01T00:00:00.000Z",
              "runs": [{"runId": 0, "state": "pending", "reasonCreated": "scheduled",
                        "scheduled": "2026-12-01T00:00:00.000Z"}]}
    return Message(EXCHANGE_PREFIX + "task-pending", f"primary.{task_id}.0._._._.s.{group}._",
                   (), orjson.dumps({"version": 1, "runId": 0, "status": status}))


async def _all_backfilled(pool: asyncpg.Pool, groups: list[str]) -> bool:
    done = await pool.fetchval("SELECT count(*) FROM mirror_groups WHERE task_group_id = "
                               "ANY($1) AND backfilled IS NOT NULL", groups)
    return bool(done == len(groups))


async def test_the_follower_backfills_later_groups_while_the_first_keeps_failing(
        database_url: str, broker: RabbitMQ, recording: Recording) -> None:
    bad = Counted(empty_pages_for_ever)
    app = misbehaving(recording, f"/api/queue/v1/task-group/{BAD_GROUP}/list", bad)
    later = recording.messages[700:]
    groups = sorted({m.routing_key.split(".")[8] for m in later
                     if m.routing_key.count(".") == 9})
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    with serving(app) as url:
        options = follow_options(broker.url, url, backfill=True)
        await prepare_queue(options)
        # The unreadable group is seen first.
        await publish(broker.url, [pending("BadTaskXQxCBadTaskXxxA", BAD_GROUP), *later])
        async with following(database_url, options) as pool:
            await eventually_async(lambda: _all_backfilled(pool, groups), what="the later groups")
            held = await pool.fetchrow("SELECT attempts, backfilled, problem FROM mirror_groups "
                                       "WHERE task_group_id = $1", BAD_GROUP)
    assert held["attempts"] >= 1 and held["backfilled"] is None
    assert "empty pages in a row" in held["problem"]
