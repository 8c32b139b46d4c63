"""File import against a real PostgreSQL: every accepted shape, read back through the store, and
the sources it reads (files, stdin) with their progress bar."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest

from ingest.dumps import (GROUP, TASK_A, TASK_B, TASK_C, completed, definition, entry,
                          group_page, run, status, utc, write, write_lines)
from tcgraph.ingest import progress
from tcgraph.ingest.files import ImportFailed, ImportSummary, import_source
from tcgraph.model import State, TaskFilter
from tcgraph.store.pool import Database
from tcgraph.store.queries import index_entries, index_namespaces, tasks


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
    assert stored.created == datetime(2026, 11, 1, 10, 0, 0, 123000, tzinfo=UTC)
    raw = orjson.loads(await pool.fetchval("SELECT runs::text FROM tasks"))
    assert (raw[0]["scheduled"], raw[0]["started"]) == (
        "2026-11-01T10:05:00.000Z", "2026-11-01T10:06:00.999Z")


# --- reading files ---------------------------------------------------------


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
    page = group_page(*[completed(n) for n in range(30)])
    path = write_lines(tmp_path / name, [page, page]) if name.endswith(".jsonl") \
        else write(tmp_path / name, page)

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    await import_source(pool, path, progress=True, batch_size=10)
    drawn = terminal.getvalue()
    assert drawn.startswith(f"\r{path} [") and drawn.endswith("\n")
    assert "100%" in drawn.rsplit("\r", 1)[1]

    # Not a terminal: nothing is drawn.
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    await import_source(pool, path, progress=True, batch_size=10)
    assert quiet.getvalue() == ""
