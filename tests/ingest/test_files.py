"""File import against a real PostgreSQL: every accepted shape, read back through the store."""

from __future__ import annotations

import io
import sys
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import orjson
import pytest

from tcgraph.ingest import batches, progress
from tcgraph.ingest.files import ImportFailed, ImportSummary, import_documents, import_source
from tcgraph.model import State, TaskFilter
from tcgraph.store.queries import index_entries, index_namespaces, tasks
from tcgraph.store.pool import Database

from ingest.dumps import (GROUP, TASK_A, TASK_B, TASK_C, counts, definition, entry, run,
                          snapshot, status, tid, utc, write, write_lines)


# --- accepted shapes -----------------------------------------------------


async def test_list_task_group_page_round_trips(pool: asyncpg.Pool, tmp_path: Path) -> None:
    build = definition()
    test = definition(
        dependencies=[TASK_A, TASK_A],
        tags={"kind": "test"},  # no label tag: the label is metadata.name
        metadata={"name": "test-linux64/opt-xpcshell-1", "description": "", "owner": "x",
                  "source": "https://example.com"},
        taskQueueId="gecko-t/t-linux", provisionerId="gecko-t", workerType="t-linux",
        priority="very-low",
    )
    runs = [run(0, "exception", reasonResolved="worker-shutdown"), run(1, "completed")]
    page = {
        "taskGroupId": GROUP,
        "tasks": [
            {"status": status(TASK_A, runs, retries_left=2), "task": build},
            {"status": status(TASK_B, []), "task": test},
        ],
        "continuationToken": "next-page",
    }
    summary = await import_source(pool, write(tmp_path / "group.json", page))
    assert summary == ImportSummary(source=str(tmp_path / "group.json"), tasks=2, statuses=2,
                                    index_entries=0)

    found = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B])
    a, b = found[TASK_A], found[TASK_B]
    assert (a.task_group_id, a.scheduler_id, a.task_queue_id, a.project_id, a.label,
            a.priority, a.retries, a.retries_left) == (
        GROUP, "gecko-level-3", "gecko-3/b-linux", "firefox", "build-linux64/opt", "low", 3, 2)
    assert (a.created, a.deadline, a.expires) == (
        utc(build["created"]), utc(build["deadline"]), utc(build["expires"]))
    stored = await tasks.definitions_by_id(Database(pool), [TASK_A, TASK_B])
    assert orjson.loads(stored[TASK_A]) == build
    assert a.state is State.COMPLETED
    assert [(r.run_id, r.state, r.reason_created, r.reason_resolved, r.worker_id)
            for r in a.runs] == [(0, State.EXCEPTION, "scheduled", "worker-shutdown", "i-0"),
                                 (1, State.COMPLETED, "retry", "completed", "i-1")]
    assert a.runs[1].resolved == "2026-11-01T10:20:00.000Z"
    stored_runs = await pool.fetchval("SELECT runs::text FROM tasks WHERE task_id = $1", TASK_A)
    assert orjson.loads(stored_runs) == runs

    assert (b.label, b.task_queue_id, b.priority, b.state, b.runs, b.retries_left) == (
        "test-linux64/opt-xpcshell-1", "gecko-t/t-linux", "very-low", State.UNSCHEDULED, (), 3)
    assert orjson.loads(stored[TASK_B]) == test
    assert [tuple(r) for r in await pool.fetch(
        "SELECT task_id, dependency_id FROM task_dependencies")] == [(TASK_B, TASK_A)]
    assert await pool.fetchval("SELECT status_rank FROM tasks WHERE task_id = $1", TASK_A) == 23


async def test_bare_definition_takes_its_task_id_from_the_file_name(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # queue.task fills defaults in; a minimal definition gets the same defaults here.
    bare = {
        "provisionerId": "proj-a", "workerType": "ci", "taskGroupId": GROUP,
        "created": "2026-02-28T12:00:00Z", "deadline": "2026-02-28T13:00:00+01:00",
        "payload": {}, "metadata": {"name": "lint", "description": "", "owner": "x", "source": "y"},
    }
    await import_source(pool, write(tmp_path / f"{TASK_C}.json", bare))

    task = (await tasks.tasks_by_id(Database(pool), [TASK_C]))[TASK_C]
    assert (task.scheduler_id, task.project_id, task.priority, task.retries, task.retries_left,
            task.task_queue_id, task.label, task.state) == (
        "-", "none", "lowest", 5, 5, "proj-a/ci", "lint", State.UNSCHEDULED)
    # Taskcluster's default expiry: a year after the deadline.
    assert task.deadline == utc("2026-02-28T12:00:00Z")
    assert task.expires == utc("2027-02-28T12:00:00Z")
    stored = await tasks.definitions_by_id(Database(pool), [TASK_C])
    assert orjson.loads(stored[TASK_C]) == bare | {
        "created": "2026-02-28T12:00:00.000Z", "deadline": "2026-02-28T12:00:00.000Z",
        "expires": "2027-02-28T12:00:00.000Z",
    }


async def test_queue_tasks_then_statuses(pool: asyncpg.Pool, tmp_path: Path) -> None:
    tasks_page = {"tasks": [{"taskId": TASK_A, "task": definition()},
                            {"taskId": TASK_B, "task": definition(tags={"label": "b"})}],
                  "continuationToken": "x"}
    single = {"taskId": TASK_C, "task": definition(tags={"label": "c"}, taskQueueId="p/w",
                                                   provisionerId=None, workerType=None)}
    await import_source(pool, write(tmp_path / "tasks.json", tasks_page))
    await import_source(pool, write(tmp_path / "one-task.json", single))
    before = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B, TASK_C])
    definitions_before = await tasks.definitions_by_id(Database(pool), [TASK_A, TASK_B, TASK_C])
    assert {t.state for t in before.values()} == {State.UNSCHEDULED}
    assert before[TASK_C].task_queue_id == "p/w"

    statuses = {"statuses": [
        {"taskId": TASK_A, "status": status(TASK_A, [run(0, "running")])},
        {"taskId": TASK_B, "status": status(TASK_B, [run(0, "failed")], retries_left=0)},
    ]}
    summary = await import_source(pool, write(tmp_path / "statuses.json", statuses))
    assert (summary.tasks, summary.statuses) == (0, 2)
    await import_source(pool, write(tmp_path / "status.json",
                                    {"status": status(TASK_C, [run(0, "pending")])}))

    after = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B, TASK_C])
    assert (after[TASK_A].state, after[TASK_A].runs[0].worker_id) == (State.RUNNING, "i-0")
    assert (after[TASK_B].state, after[TASK_B].retries_left) == (State.FAILED, 0)
    assert (after[TASK_C].state, after[TASK_C].runs[0].started) == (State.PENDING, None)
    # The definitions are untouched by statuses.
    assert await tasks.definitions_by_id(Database(pool), [TASK_A, TASK_B, TASK_C]) == \
        definitions_before


async def test_state_comes_from_the_last_run(pool: asyncpg.Pool, tmp_path: Path) -> None:
    stale = status(TASK_A, [run(0, "completed")]) | {"state": "pending"}
    await import_source(pool, write(tmp_path / "group.json", {
        "taskGroupId": GROUP, "tasks": [{"status": stale, "task": definition()}]}))
    assert (await tasks.tasks_by_id(Database(pool), [TASK_A]))[TASK_A].state is State.COMPLETED


async def test_index_entries_are_split_at_the_last_dot(pool: asyncpg.Pool, tmp_path: Path) -> None:
    page = {"tasks": [
        entry("gecko.v2.mozilla-central.latest.firefox.linux64-opt", TASK_A, 1700000000,
              {"note": "latest", "n": [1, 2.5]}),
        entry("gecko.v2.mozilla-central.revision.abc.firefox.linux64-opt", TASK_A, 1700000000),
    ], "continuationToken": "x"}
    summary = await import_source(pool, write(tmp_path / "index.json", page))
    await import_source(pool, write(tmp_path / "one.json", entry("toplevel", TASK_B, 2)))
    assert summary.index_entries == 2

    latest, revision, top = await index_entries.index_entries(Database(pool), [
        ("gecko.v2.mozilla-central.latest.firefox", "linux64-opt"),
        ("gecko.v2.mozilla-central.revision.abc.firefox", "linux64-opt"),
        ("", "toplevel"),
    ])
    assert latest is not None and revision is not None and top is not None
    assert (latest.task_id, latest.rank, orjson.loads(latest.data), latest.expires) == (
        TASK_A, 1700000000.0, {"note": "latest", "n": [1, 2.5]}, utc("2030-01-01T00:00:00Z"))
    assert latest.path == "gecko.v2.mozilla-central.latest.firefox.linux64-opt"
    assert (top.task_id, top.rank) == (TASK_B, 2.0)
    namespaces = await index_namespaces.namespaces(Database(pool), [
        "gecko", "gecko.v2.mozilla-central.latest.firefox",
        "gecko.v2.mozilla-central.latest.firefox.linux64-opt"])
    assert [n is not None for n in namespaces] == [True, True, False]


async def test_a_list_of_documents(pool: asyncpg.Pool, tmp_path: Path) -> None:
    documents = [
        {"taskGroupId": GROUP, "tasks": [{"status": status(TASK_A, []), "task": definition()}]},
        {"taskId": TASK_B, "task": definition(tags={"label": "other"})},
        {"status": status(TASK_B, [run(0, "running")])},
        entry("a.b.c", TASK_B, 1),
    ]
    summary = await import_source(pool, write(tmp_path / "all.json", documents))
    assert (summary.tasks, summary.statuses, summary.index_entries) == (2, 2, 1)
    found = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B])
    assert (found[TASK_A].state, found[TASK_B].state) == (State.UNSCHEDULED, State.RUNNING)
    assert (await tasks.latest_by_label(Database(pool), ["other"], TaskFilter()))[0] \
        == found[TASK_B]


@pytest.mark.parametrize("name", ["dump.jsonl", "dump.ndjson", "dump.json", "dump"])
async def test_json_lines(pool: asyncpg.Pool, tmp_path: Path, name: str) -> None:
    # By extension, or because the whole text is not one JSON value but its first line is.
    path = tmp_path / name
    path.write_bytes(
        orjson.dumps({"taskGroupId": GROUP, "tasks": [
            {"status": status(TASK_A, [run(0, "completed")]), "task": definition()}]})
        + b"\r\n\n   \n"
        + orjson.dumps({"taskId": TASK_B, "status": status(TASK_B, [run(0, "pending")]),
                        "task": definition(tags={"label": "x"})})
        + b"\n" + orjson.dumps(entry("x.y", TASK_B, 3))  # no final newline
    )
    summary = await import_source(pool, str(path))
    assert (summary.tasks, summary.statuses, summary.index_entries) == (2, 2, 1)
    found = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B])
    assert (found[TASK_A].state, found[TASK_B].state) == (State.COMPLETED, State.PENDING)


async def test_timestamps_are_normalised_to_taskclusters_format(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    task = definition(created="2026-11-01T12:00:00.123456+02:00",
                      deadline="2026-11-02T10:00:00Z", expires="2027-11-01T10:00:00.5-00:30")
    runs = [run(0, "completed", scheduled="2026-11-01T10:05:00+00:00",
                started="2026-11-01T11:06:00.999999+01:00")]
    await import_source(pool, write(tmp_path / "g.json", {
        "taskGroupId": GROUP, "tasks": [{"status": status(TASK_A, runs), "task": task}]}))

    stored = (await tasks.tasks_by_id(Database(pool), [TASK_A]))[TASK_A]
    as_json = orjson.loads((await tasks.definitions_by_id(Database(pool), [TASK_A]))[TASK_A])
    assert (as_json["created"], as_json["deadline"], as_json["expires"]) == (
        "2026-11-01T10:00:00.123Z", "2026-11-02T10:00:00.000Z", "2027-11-01T10:30:00.500Z")
    assert stored.created == datetime(2026, 11, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    raw = orjson.loads(await pool.fetchval("SELECT runs::text FROM tasks"))
    assert (raw[0]["scheduled"], raw[0]["started"]) == (
        "2026-11-01T10:05:00.000Z", "2026-11-01T10:06:00.999Z")


# --- idempotency and precedence -----------------------------------------


async def test_importing_twice_changes_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = write(tmp_path / "dump.json", [
        {"taskGroupId": GROUP, "tasks": [
            {"status": status(TASK_A, [run(0, "completed")]), "task": definition()},
            {"status": status(TASK_B, []), "task": definition(dependencies=[TASK_A])},
        ]},
        {"tasks": [entry("a.b.c", TASK_A, 5, {"k": 1}), entry("a.d", TASK_B, 1)]},
        {"taskId": TASK_C, "task": definition(tags={"label": "c"})},
    ])
    first = await import_source(pool, path)
    before = await snapshot(pool)
    assert [len(rows) for rows in before.values()] == [3, 1, 2, 2]
    assert await import_source(pool, path) == first
    assert await snapshot(pool) == before


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_an_older_status_never_replaces_a_newer_one(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    monkeypatch.setattr(batches, "BATCH_SIZE", batch_size)
    task = {"taskId": TASK_A, "task": definition()}
    newer = status(TASK_A, [run(0, "exception"), run(1, "running")])  # rank 22
    older = status(TASK_A, [run(0, "running")])  # rank 12
    await import_source(pool, write_lines(tmp_path / "a.jsonl", [
        task, {"status": newer}, {"status": older}]))
    assert (await tasks.tasks_by_id(Database(pool), [TASK_A]))[TASK_A].state is State.RUNNING
    assert await pool.fetchval("SELECT status_rank FROM tasks") == 22

    # A later file with the older status changes nothing either...
    await import_source(pool, write(tmp_path / "old.json", {"status": older}))
    assert await pool.fetchval("SELECT status_rank FROM tasks") == 22
    # ...and one with a newer status replaces it.
    await import_source(pool, write(tmp_path / "new.json", {
        "status": status(TASK_A, [run(0, "exception"), run(1, "completed")])}))
    stored = (await tasks.tasks_by_id(Database(pool), [TASK_A]))[TASK_A]
    assert (stored.state, len(stored.runs)) == (State.COMPLETED, 2)


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_statuses_may_come_before_their_definitions(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    monkeypatch.setattr(batches, "BATCH_SIZE", batch_size)
    # Of the statuses of one task in one file, the highest rank wins, the later on ties:
    # A: a newer status first, an older one after its definition -> the newer.
    # B: two statuses of equal rank around the definition -> the later (worker "second").
    # C: the same, both before the definition.
    await import_source(pool, write_lines(tmp_path / "out-of-order.jsonl", [
        {"status": status(TASK_C, [run(0, "completed", workerId="first")])},
        {"status": status(TASK_C, [run(0, "completed", workerId="second")])},
        {"statuses": [
            {"taskId": TASK_A, "status": status(TASK_A, [run(0, "exception"), run(1, "failed")])},
            {"taskId": TASK_B, "status": status(TASK_B, [run(0, "completed", workerId="first")])},
        ]},
        {"tasks": [{"taskId": TASK_A, "task": definition()},
                   {"taskId": TASK_B, "task": definition(tags={"label": "b"})},
                   {"taskId": TASK_C, "task": definition(tags={"label": "c"})}]},
        {"status": status(TASK_A, [run(0, "running")])},
        {"status": status(TASK_B, [run(0, "completed", workerId="second")])},
    ]))
    found = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B, TASK_C])
    assert (found[TASK_A].state, len(found[TASK_A].runs)) == (State.FAILED, 2)
    assert found[TASK_B].runs[0].worker_id == "second"
    assert found[TASK_C].runs[0].worker_id == "second"


@pytest.mark.parametrize("batch_size", [1, 1000])
async def test_index_entries_keep_the_highest_rank(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    monkeypatch.setattr(batches, "BATCH_SIZE", batch_size)
    await import_source(pool, write(tmp_path / "one.json", {"tasks": [
        entry("ns.high-first", TASK_A, 10), entry("ns.high-first", TASK_B, 5),
        entry("ns.low-first", TASK_A, 5), entry("ns.low-first", TASK_B, 10),
        entry("ns.tie", TASK_A, 7), entry("ns.tie", TASK_B, 7),
        # An expired entry gives way to any other.
        entry("ns.expired", TASK_A, 10, expires="2020-01-01T00:00:00Z"),
        entry("ns.expired", TASK_B, 1),
    ]}))
    found = await index_entries.index_entries(Database(pool), [
        ("ns", "high-first"), ("ns", "low-first"), ("ns", "tie"), ("ns", "expired")])
    assert [e.task_id if e else None for e in found] == [TASK_A, TASK_B, TASK_B, TASK_B]

    # Across files: a lower rank is ignored, an equal one replaces.
    await import_source(pool, write(tmp_path / "two.json", {"tasks": [
        entry("ns.high-first", TASK_C, 9), entry("ns.tie", TASK_C, 7)]}))
    high_first, tie = await index_entries.index_entries(
        Database(pool), [("ns", "high-first"), ("ns", "tie")])
    assert (high_first and high_first.task_id, tie and tie.task_id) == (TASK_A, TASK_C)


async def test_import_documents_uses_the_callers_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        summary = await import_documents(
            conn, [("document 1", {"taskId": TASK_A, "task": definition()})], "generated")
        assert summary.tasks == 1
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
        await transaction.rollback()
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0

    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ImportFailed) as failed:
            await import_documents(conn, [
                ("line 7", {"taskGroupId": GROUP, "tasks": [{"task": definition()}]})], "gen")
    assert failed.value.where == "line 7, tasks[0]"
    assert failed.value.problem == "missing required field 'taskId'"


# --- bad input -------------------------------------------------------------


def _page(*elements: dict) -> dict:
    return {"taskGroupId": GROUP, "tasks": list(elements)}


def _good(n: int) -> dict:
    return {"status": status(tid(n), [run(0, "completed")]),
            "task": definition(tags={"label": f"l{n}"})}


BAD_INPUT = [
    pytest.param("bad.json", b'{"tasks": [\n  {"taskId": 1,}\n]}', "line 2, column 15",
                 "not valid JSON: ", id="invalid-json"),
    pytest.param("bad.jsonl", orjson.dumps(_page(_good(1))) + b"\n" + orjson.dumps(_page(_good(2)))
                 + b"\n{oops\n", "line 3", "not valid JSON: ", id="invalid-json-line"),
    pytest.param("bad.jsonl", b'{\n  "taskGroupId": "x"\n}\n', "line 1",
                 "(JSON Lines files hold one document a line)", id="pretty-json-in-jsonl"),
    pytest.param("bad.json", b"  \n", "line 1", "empty file: there is nothing to import",
                 id="empty"),
    pytest.param("bad.json", orjson.dumps(_page(_good(1), {"status": status(TASK_A, []),
                                                          "task": definition(taskGroupId=None)})),
                 "tasks[1].task.taskGroupId", "expected a string, got null",
                 id="null-task-group"),
    pytest.param("bad.json", orjson.dumps(_page(_good(1), {
        "status": status(TASK_A, []),
        "task": {k: v for k, v in definition().items() if k != "taskGroupId"}})),
                 "tasks[1].task", "missing required field 'taskGroupId'", id="missing-field"),
    pytest.param("bad.json", orjson.dumps(_page({"status": status(TASK_A, []) | {"state": "bogus"},
                                                "task": definition()})),
                 "tasks[0].status.state",
                 "'bogus' is not a task state (one of unscheduled, pending, running, completed, "
                 "failed, exception)", id="bad-state"),
    pytest.param("bad.json", orjson.dumps(_page({
        "status": status(TASK_A, [run(0, "done")]) | {"state": "completed"},
        "task": definition()})),
                 "tasks[0].status.runs[0].state", "'done' is not a run state", id="bad-run-state"),
    pytest.param("bad.json", orjson.dumps(_page({
        "status": status(TASK_A, [run(0, scheduled="2026-11-01T10:05:00")]),
        "task": definition()})), "tasks[0].status.runs[0].scheduled",
                 "'2026-11-01T10:05:00' has no time zone", id="naive-timestamp"),
    pytest.param("bad.json", orjson.dumps({"taskId": TASK_A, "task": definition(created="soon")}),
                 "task.created", "'soon' is not an ISO 8601 timestamp", id="bad-timestamp"),
    pytest.param("bad.json", orjson.dumps({"taskId": TASK_A, "task": definition(retries="5")}),
                 "task.retries", "expected a whole number, got the string '5'", id="wrong-type"),
    pytest.param("bad.json", orjson.dumps(_page({"status": status(TASK_A, [run(1)]),
                                                "task": definition()})),
                 "tasks[0].status.runs[0].runId", "runId 1 at position 0", id="run-order"),
    pytest.param("bad.json", orjson.dumps({"taskId": "short", "task": definition()}),
                 "taskId", "'short' is not a taskId", id="bad-task-id"),
    pytest.param("bad.json", orjson.dumps([_page(_good(1)), {"statuses": [
        {"taskId": TASK_A, "status": status(TASK_A, [run(0)])}]}]),
                 "[1].statuses[0].status", f"no task definition for the status of {TASK_A}: "
                 "import the definitions first", id="status-without-task"),
    pytest.param("bad.json", orjson.dumps({"statuses": [
        {"taskId": TASK_A, "status": status(TASK_B, [])}]}), "statuses[0].status.taskId",
                 f"is not the taskId '{TASK_A}' this status is listed under", id="id-mismatch"),
    pytest.param("bad.json", orjson.dumps({"foo": 1, "bar": 2}), "top level",
                 "unrecognised document: expected a Taskcluster queue or index response, "
                 "got keys ['bar', 'foo']", id="unrecognised"),
    pytest.param("bad.json", orjson.dumps([_page(_good(1)), 42]), "[1]",
                 "unrecognised document: expected a Taskcluster queue or index response "
                 "(an object), got the number 42", id="not-an-object"),
    pytest.param("bad.json", orjson.dumps({"tasks": [{"namespace": "a..b", "taskId": TASK_A,
                                                      "rank": 0, "data": {},
                                                      "expires": "2030-01-01T00:00:00Z"}]}),
                 "tasks[0].namespace", "'a..b' is not an index path", id="bad-index-path"),
    pytest.param("bad.json", orjson.dumps({"tasks": [{"namespace": "a.b", "taskId": TASK_A,
                                                      "rank": 0, "expires": "2030-01-01"}]}),
                 "tasks[0]", "missing required field 'data'", id="entry-missing-data"),
    pytest.param("bad.json", orjson.dumps(_page({"status": status(TASK_A, []),
                                                "task": definition(group=TASK_B)})),
                 "tasks[0].task.taskGroupId", f"'{TASK_B}' is not the taskGroupId '{GROUP}'",
                 id="group-mismatch"),
    pytest.param("bad.json", orjson.dumps(definition()), "top level",
                 "a task definition (a queue.task response) carries no taskId, and the file "
                 "name 'bad.json' is not one", id="definition-without-task-id"),
]


@pytest.mark.parametrize(("name", "content", "where", "problem"), BAD_INPUT)
async def test_bad_input_fails_and_writes_nothing(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    name: str, content: bytes, where: str, problem: str,
) -> None:
    await import_source(pool, write(tmp_path / "earlier.json", [
        _page(_good(100), _good(101)), entry("kept.entry", tid(100), 1)]))
    before = await snapshot(pool)
    # Small batches: the valid part of the file is written before the bad part is read.
    monkeypatch.setattr(batches, "BATCH_SIZE", 1)
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(ImportFailed) as failed:
        await import_source(pool, str(path))
    error = failed.value
    assert (error.source, error.where) == (str(path), where)
    assert problem in error.problem
    assert str(error) == f"{path}: {where}: {error.problem}"
    assert await snapshot(pool) == before


async def test_a_failure_after_many_batches_rolls_everything_back(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "BATCH_SIZE", 10)
    lines = [_page(*[_good(n) for n in range(start, start + 25)]) for start in range(0, 200, 25)]
    lines.append({"tasks": [entry(f"ns.e{n}", tid(n), n) for n in range(50)]})
    lines.append(_page(_good(500), {"status": status(tid(501), []) | {"state": "bogus"},
                                    "task": definition()}))
    with pytest.raises(ImportFailed) as failed:
        await import_source(pool, write_lines(tmp_path / "half.jsonl", lines))
    assert failed.value.where == "line 10, tasks[1].status.state"
    assert await counts(pool) == (0, 0, 0, 0)

    # Without the bad line, all of it goes in.
    summary = await import_source(pool, write_lines(tmp_path / "good.jsonl", lines[:-1]))
    assert (summary.tasks, summary.statuses, summary.index_entries) == (200, 200, 50)
    assert (await counts(pool))[0] == 200


async def test_a_missing_file_raises_oserror(pool: asyncpg.Pool, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await import_source(pool, str(tmp_path / "nope.json"))


async def test_stdin(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    data = orjson.dumps({"taskId": TASK_A, "task": definition()}) + b"\n" + orjson.dumps(
        {"status": status(TASK_A, [run(0, "running")])})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    summary = await import_source(pool, "-")
    assert (summary.source, summary.tasks, summary.statuses) == ("<stdin>", 1, 1)

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"[1")))
    with pytest.raises(ImportFailed, match=r"^<stdin>: line 1, column 3: not valid JSON"):
        await import_source(pool, "-")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("name", ["big.json", "big.jsonl"])
async def test_progress_bar_on_a_terminal(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_MIN_BYTES", 100)
    monkeypatch.setattr(batches, "BATCH_SIZE", 10)
    page = _page(*[_good(n) for n in range(30)])
    path = write_lines(tmp_path / name, [page, page]) if name.endswith(".jsonl") \
        else write(tmp_path / name, page)

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    await import_source(pool, path, progress=True)
    drawn = terminal.getvalue()
    assert drawn.startswith(f"\r{path} [") and drawn.endswith("\n")
    assert "100%" in drawn.rsplit("\r", 1)[1]

    # Not a terminal: nothing is drawn.
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    await import_source(pool, path, progress=True)
    assert quiet.getvalue() == ""
