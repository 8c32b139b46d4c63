"""Subscription streams (api/subscriptions/streams.py) against a real PostgreSQL and server:
the opening snapshot, live changes, resuming with a cursor, cursor errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from api.subscriptions.wsclient import GROUP_CHANGES, TASK_CHANGES, Client, change_of, connected
from factories import FakeTask, store
from servers import serving
from tcgraph.api.subscriptions.cursors import Snapshot, encode
from tcgraph.config import Settings
from tcgraph.ingest.expire import expire_changes
from tcgraph.server import create_app
from tcgraph.store.queries.task_changes import Position


async def changes(client: Client, op_id: str, count: int) -> list[dict[str, Any]]:
    """The next `count` TaskChanges of operation `op_id` (any other message fails)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = await client.receive()
        assert message.get("id") == op_id, message
        found.append(change_of(message))
    return found


def state(change: dict[str, Any]) -> str | None:
    task = change["task"]
    return None if task is None else task["status"]["state"]


async def stored_states(pool: asyncpg.Pool, group: str) -> dict[str, str]:
    rows = await pool.fetch("SELECT task_id, state FROM tasks WHERE task_group_id = $1", group)
    return {r["task_id"]: r["state"].upper() for r in rows}


async def test_snapshot_then_live_changes(database_url: str, settings: Settings,
                                          pool: asyncpg.Pool) -> None:
    first = [FakeTask(task_group_id="g", state="pending") for _ in range(30)]
    await store(pool, [*first, FakeTask(task_group_id="other")])
    with serving(create_app(settings, database_url)) as url:
        async with connected(url) as client:
            await client.subscribe("a", GROUP_CHANGES, g="g")
            opening = await changes(client, "a", 30)
            assert {c["taskId"] for c in opening} == {t.task_id for t in first}
            assert {state(c) for c in opening} == {"PENDING"}
            # The snapshot's changes share one cursor: resuming from it sends what it missed.
            assert len({c["cursor"] for c in opening}) == 1
            running = [FakeTask(task_id=t.task_id, task_group_id="g", state="running")
                       for t in first[:10]]
            added = FakeTask(task_group_id="g", state="pending")
            await store(pool, [*running, added, FakeTask(task_group_id="other")])
            live = await changes(client, "a", 11)
            assert {c["taskId"] for c in live} == {t.task_id for t in [*running, added]}
            cursors = [c["cursor"] for c in live]
            assert len(set(cursors)) == 11
            latest = {c["taskId"]: state(c) for c in [*opening, *live]}
            assert latest == await stored_states(pool, "g")


async def test_resume_sends_exactly_what_was_missed(database_url: str, settings: Settings,
                                                    pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(5)]
    await store(pool, tasks)
    with serving(create_app(settings, database_url)) as url:
        async with connected(url) as watcher:
            await watcher.subscribe("w", GROUP_CHANGES, g="g")
            whole = await changes(watcher, "w", 5)
            async with connected(url) as leaver:
                await leaver.subscribe("l", GROUP_CHANGES, g="g")
                before = await changes(leaver, "l", 5)
                await store(pool, [FakeTask(task_id=t.task_id, task_group_id="g",
                                            state="running") for t in tasks[:2]])
                before += await changes(leaver, "l", 2)
            # The leaver is gone; three more commits happen without it.
            for step, state_name in enumerate(("running", "completed", "failed")):
                await store(pool, [FakeTask(task_id=tasks[2 + step].task_id, task_group_id="g",
                                            state=state_name)])
            async with connected(url) as leaver:
                await leaver.subscribe("l", GROUP_CHANGES, g="g", after=before[-1]["cursor"])
                after = await changes(leaver, "l", 3)
                await store(pool, [FakeTask(task_id=tasks[0].task_id, task_group_id="g",
                                            state="completed")])
                after += await changes(leaver, "l", 1)
            whole += await changes(watcher, "w", 6)
    keys = [(c["cursor"], c["taskId"]) for c in [*before, *after]]
    assert keys == [(c["cursor"], c["taskId"]) for c in whole]
    assert [c["taskId"] for c in after] == [t.task_id for t in tasks[2:5]] + [tasks[0].task_id]
    assert [state(c) for c in after] == ["RUNNING", "COMPLETED", "FAILED", "COMPLETED"]


async def test_resume_from_the_snapshot_cursor(database_url: str, settings: Settings,
                                               pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(3)]
    await store(pool, tasks)
    with serving(create_app(settings, database_url)) as url:
        async with connected(url) as client:
            await client.subscribe("a", GROUP_CHANGES, g="g")
            opening = await changes(client, "a", 3)
        await store(pool, [FakeTask(task_id=tasks[1].task_id, task_group_id="g",
                                    state="running")])
        async with connected(url) as client:
            await client.subscribe("a", GROUP_CHANGES, g="g", after=opening[-1]["cursor"])
            missed = await changes(client, "a", 1)
            assert [(c["taskId"], state(c)) for c in missed] == [(tasks[1].task_id, "RUNNING")]


async def test_task_changes_follow_only_the_listed_tasks(database_url: str, settings: Settings,
                                                         pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(4)]
    await store(pool, tasks)
    wanted = [tasks[1].task_id, tasks[3].task_id, "AAAAAAAAAAAAAAAAAAAAAA"]
    with serving(create_app(settings, database_url)) as url:
        async with connected(url) as client:
            await client.subscribe("t", TASK_CHANGES, ids=wanted)
            opening = await changes(client, "t", 2)  # the unknown id has no task to show
            assert {c["taskId"] for c in opening} == set(wanted[:2])
            await store(pool, [FakeTask(task_id=t.task_id, task_group_id="g", state="running")
                               for t in tasks])
            live = await changes(client, "t", 2)
            assert sorted(c["taskId"] for c in live) == sorted(wanted[:2])
            assert {state(c) for c in live} == {"RUNNING"}
            # A task that is deleted (expiry) is a change too: `task` is null.
            await pool.execute("DELETE FROM tasks WHERE task_id = $1", tasks[1].task_id)
            gone = await changes(client, "t", 1)
            assert gone[0]["taskId"] == tasks[1].task_id and gone[0]["task"] is None


async def error_of(client: Client, op_id: str) -> dict[str, Any]:
    message = await client.receive()
    assert message == {"id": op_id, "type": "error", "payload": message.get("payload")}, message
    extensions: dict[str, Any] = message["payload"][0]["extensions"]
    return extensions


async def test_bad_future_and_expired_cursors_are_coded_errors(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(3)]
    await store(pool, tasks)
    with serving(create_app(settings, database_url)) as url:
        async with connected(url) as client:
            await client.subscribe("x", GROUP_CHANGES, g="g", after="not a cursor!")
            assert (await error_of(client, "x"))["code"] == "BAD_CURSOR"
            await client.subscribe("y", GROUP_CHANGES, g="g", after="AQID")
            assert (await error_of(client, "y"))["code"] == "BAD_CURSOR"
            future = encode(Position(2**62, 1))
            await client.subscribe("f", GROUP_CHANGES, g="g", after=future)
            assert (await error_of(client, "f"))["code"] == "BAD_CURSOR"
            beyond = encode(Snapshot(5, 2**62, frozenset()))
            await client.subscribe("s", GROUP_CHANGES, g="g", after=beyond)
            assert (await error_of(client, "s"))["code"] == "BAD_CURSOR"
            # A cursor from before what the log retains.
            await client.subscribe("a", GROUP_CHANGES, g="g")
            opening = await changes(client, "a", 3)
            await store(pool, [FakeTask(task_id=tasks[0].task_id, task_group_id="g",
                                        state="running")])
            old = (await changes(client, "a", 1))[0]["cursor"]
            await store(pool, [FakeTask(task_id=tasks[1].task_id, task_group_id="g",
                                        state="running")])
            await changes(client, "a", 1)
            assert await expire_changes(pool, retention=timedelta(0)) >= 2
            for op_id, cursor in (("o", old), ("p", opening[0]["cursor"])):
                await client.subscribe(op_id, GROUP_CHANGES, g="g", after=cursor)
                extensions = await error_of(client, op_id)
                assert extensions == {"code": "CURSOR_EXPIRED", "argument": "after"}


DIFFERENTIAL = """
subscription($g: ID!) {
  first: taskGroupChanges(taskGroupId: $g) {
    __typename c: cursor ...on TaskChange { taskId id: taskId }
    task { taskId label status { state runs { runId state } } }
    taskId
  }
}"""


async def test_rendered_changes_equal_the_resolvers_answers(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(3)]
    await store(pool, tasks)
    answers = []
    # sql_json off: every field resolved per subscriber; on: rendered once per change.
    for sql_json in (False, True):
        with serving(create_app(settings.with_(sql_json=sql_json), database_url)) as url:
            async with connected(url) as client:
                await client.subscribe("d", DIFFERENTIAL, g="g")
                opening = await changes(client, "d", 3)
                await pool.execute("DELETE FROM tasks WHERE task_id = $1", tasks[0].task_id)
                gone = await changes(client, "d", 1)
                await store(pool, [tasks[0]])
                back = await changes(client, "d", 1)
        answers.append([{k: v for k, v in c.items() if k != "c"}
                        for c in [*opening, *gone, *back]])
        assert list(opening[0]) == ["__typename", "c", "taskId", "id", "task"]
    assert answers[0] == answers[1]
    assert answers[1][3]["task"] is None
