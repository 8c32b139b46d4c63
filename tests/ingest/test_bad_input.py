"""Bad input to import: a clear error naming the file, the element and the problem,
and nothing from the file written; input the store can hold comes back exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from ingest.dumps import (GROUP, LONG_LABEL, TASK_A, TASK_B, completed, counts, definition,
                          entry, group_page, run, snapshot, status, tid, write, write_lines)
from tcgraph.ingest.files import ImportFailed, ImportRefused, import_source

BIG = 2**70


def task_page(**changes: Any) -> dict[str, Any]:
    return {"taskGroupId": GROUP, "tasks": [
        {"task": definition(**changes), "status": status(TASK_A, [run(0)])}]}


async def refused(pool: asyncpg.Pool, path: str) -> ImportFailed:
    with pytest.raises(ImportFailed) as failed:
        await import_source(pool, path)
    assert await counts(pool) == (0, 0, 0, 0)
    return failed.value


@pytest.mark.parametrize("changes, where", [
    ({"tags": {"label": "build\x00linux"}}, "tasks[0].task.tags.label"),
    ({"payload": {"env": {"A": "x\x00"}}}, "tasks[0].task.payload.env.A"),
    ({"extra": {"k\x00": 1}}, "tasks[0].task.extra.k\x00"),
    ({"schedulerId": "a\x00"}, "tasks[0].task.schedulerId"),
])
async def test_a_nul_in_a_definition_is_refused_where_it_is(
        pool: asyncpg.Pool, tmp_path: Path, changes: dict[str, Any], where: str) -> None:
    error = await refused(pool, write(tmp_path / "nul.json", task_page(**changes)))
    assert error.where == where and "NUL" in error.problem


@pytest.mark.parametrize("changes, where, problem", [
    ({"routes": ["index.a.b", 5]}, "tasks[0].task.routes[1]", "the number 5"),
    ({"routes": [None]}, "tasks[0].task.routes[0]", "null"),
    ({"routes": "index.a.b"}, "tasks[0].task.routes", "the string 'index.a.b'"),
    ({"metadata": {"name": 5, "description": "", "owner": "", "source": ""}},
     "tasks[0].task.metadata.name", "the number 5"),
    ({"metadata": {"name": "n", "description": None, "owner": "", "source": ""}},
     "tasks[0].task.metadata.description", "null"),
    ({"metadata": {"name": "n", "description": "", "owner": ["me"], "source": ""}},
     "tasks[0].task.metadata.owner", "a list"),
    ({"metadata": {"name": "n", "description": "", "owner": "", "source": {}}},
     "tasks[0].task.metadata.source", "an object"),
    ({"tags": {"kind": 3}}, "tasks[0].task.tags.kind", "the number 3"),
])
async def test_what_the_api_serves_as_strings_must_be_strings(
        pool: asyncpg.Pool, tmp_path: Path, changes: dict[str, Any], where: str,
        problem: str) -> None:
    error = await refused(pool, write(tmp_path / "t.json", task_page(**changes)))
    expected = "a list of strings" if where.endswith("routes") else "a string"
    assert (error.where, error.problem) == (where, f"expected {expected}, got {problem}")


async def test_a_row_postgresql_refuses_is_named(pool: asyncpg.Pool, tmp_path: Path) -> None:
    # An index path over PostgreSQL's index row limit for index_entries_pkey.
    long = ".".join(["ns", LONG_LABEL[:1500]])
    path = write(tmp_path / "entries.json", {"tasks": [
        entry("ns.a", TASK_A), entry(long, TASK_A), entry("ns.b", TASK_A)]})
    with pytest.raises(ImportRefused) as failed:
        await import_source(pool, path, batch_size=2)
    assert failed.value.where == "tasks[1]"
    assert failed.value.problem.startswith(
        "PostgreSQL refused it: ProgramLimitExceededError (SQLSTATE 54000): index row")
    assert await counts(pool) == (0, 0, 0, 0)


async def test_an_escaped_backslash_u0000_is_text_not_a_nul(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    await import_source(pool, write(tmp_path / "t.json", task_page(extra={"k": "\\u0000"})))
    stored = await pool.fetchval("SELECT definition->'extra'->>'k' FROM tasks")
    assert stored == "\\u0000"


@pytest.mark.parametrize("document, where", [
    (entry("a.b\x00.c", TASK_A), "namespace"),
    (entry("a.b.c", TASK_A, data={"x": ["\x00"]}), "data.x[0]"),
])
async def test_a_nul_in_an_index_entry_is_refused(
        pool: asyncpg.Pool, tmp_path: Path, document: dict[str, Any], where: str) -> None:
    error = await refused(pool, write(tmp_path / "nul.json", document))
    assert error.where == where and "NUL" in error.problem


async def test_counts_beyond_the_store_are_refused(pool: asyncpg.Pool, tmp_path: Path) -> None:
    error = await refused(pool, write(tmp_path / "r.json", task_page(retries=2**31)))
    assert error.where == "tasks[0].task.retries" and "2147483647" in error.problem
    page = task_page()
    page["tasks"][0]["status"]["retriesLeft"] = 2**63
    error = await refused(pool, write(tmp_path / "l.json", page))
    assert error.where == "tasks[0].status.retriesLeft"


async def test_timestamps_python_cannot_hold_are_refused(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    page = task_page(deadline="9999-12-30T00:00:00.000Z")
    del page["tasks"][0]["task"]["expires"]
    error = await refused(pool, write(tmp_path / "d.json", page))
    assert error.where == "tasks[0].task.deadline" and "give 'expires'" in error.problem
    for stamp in ("9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+14:00"):
        error = await refused(pool, write(tmp_path / "o.json", task_page(created=stamp)))
        assert error.where == "tasks[0].task.created" and "outside the years" in error.problem


async def test_integers_beyond_64_bits_come_back_exactly(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    extra = {"big": BIG, "negative": -BIG - 1, "u64": 2**64 - 1, "float": 0.1,
             "list": [BIG, 1]}
    path = tmp_path / "big.json"
    path.write_text(orjson.dumps(task_page()).decode().replace(
        '"extra":{"treeherder":{"symbol":"B"}}',
        '"extra":{"big":%d,"negative":%d,"u64":%d,"float":0.1,"list":[%d,1]}'
        % (BIG, -BIG - 1, 2**64 - 1, BIG)))
    await import_source(pool, str(path))
    assert await pool.fetchval("SELECT definition->'extra'->>'big' FROM tasks") == str(BIG)
    text = await pool.fetchval("SELECT definition->>'extra' FROM tasks")
    assert json.loads(text) == extra


async def test_ranks_are_any_json_number(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """The index service's schema says `type: number` (a double to it): 2^64 is stored
    as that double; a number beyond a double's range is refused."""
    path = tmp_path / "rank.json"
    path.write_text('{"namespace":"a.b","taskId":"%s","rank":%d,"data":{},'
                    '"expires":"2099-01-01T00:00:00.000Z"}' % (TASK_A, 2**64))
    await import_source(pool, str(path))
    assert await pool.fetchval("SELECT rank FROM index_entries") == float(2**64)
    path.write_text('{"namespace":"a.c","taskId":"%s","rank":1e400,"data":{},'
                    '"expires":"2099-01-01T00:00:00.000Z"}' % TASK_A)
    with pytest.raises(ImportFailed, match=r"line 1, column \d+: not valid JSON: .*infinity"):
        await import_source(pool, str(path))
    path.write_text('{"namespace":"a.c","taskId":"%s","rank":%s,"data":{},'
                    '"expires":"2099-01-01T00:00:00.000Z"}' % (TASK_A, "9" * 400))
    with pytest.raises(ImportFailed, match=r"rank: .* too large for a rank"):
        await import_source(pool, str(path))
    assert await pool.fetchval("SELECT count(*) FROM index_entries") == 1


LINE_1 = orjson.dumps(entry("a.b", TASK_A))


@pytest.mark.parametrize("data, suffix, where", [
    (b'{"namespace": "a.\xffb"}', ".json", "line 1, column 18 (byte 18)"),
    (b'{"a": 1,\n "b": "\xc3\xa9\xe9x"}', ".json", "line 2, column 9 (byte 19)"),
    (LINE_1 + b'\n\n{"a": "\xc3("}\n', ".jsonl", f"line 3, column 8 (byte {len(LINE_1) + 10})"),
])
async def test_non_utf8_input_names_the_real_byte(
        pool: asyncpg.Pool, tmp_path: Path, data: bytes, suffix: str, where: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(data)
    error = await refused(pool, str(path))
    assert error.where == where, error
    assert error.problem.startswith("not UTF-8 (byte 0x"), error


@pytest.mark.parametrize("text, where, problem", [
    # Long numbers take the exact parser, which must refuse what orjson refuses.
    ("[" * 5000 + "12345678901234567890" + "]" * 5000, "top level", "nested more than 1024"),
    ('{"namespace": "a.\\ud800", "taskId": "%s", "rank": 12345678901234567890, "data": {},'
     ' "expires": "2099-01-01T00:00:00.000Z"}' % TASK_A, "namespace", "lone UTF-16 surrogate"),
    ('{"namespace": "a.b", "taskId": "%s", "rank": 1, "data": {"x": "\\udc00"},'
     ' "expires": "2099-01-01T00:00:00.000Z", "n": 12345678901234567890}' % TASK_A, "data",
     "lone UTF-16 surrogate"),
])
async def test_what_orjson_refuses_is_refused_on_the_exact_path_too(
        pool: asyncpg.Pool, tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = tmp_path / "odd.json"
    path.write_text(text)
    error = await refused(pool, str(path))
    assert error.where == where and problem in error.problem, error


BAD_INPUT = [
    pytest.param("bad.json", b'{"tasks": [\n  {"taskId": 1,}\n]}', "line 2, column 15",
                 "not valid JSON: ", id="invalid-json"),
    pytest.param("bad.jsonl", orjson.dumps(group_page(completed(1))) + b"\n"
                 + orjson.dumps(group_page(completed(2))) + b"\n{oops\n",
                 "line 3", "not valid JSON: ", id="invalid-json-line"),
    pytest.param("bad.jsonl", b'{\n  "taskGroupId": "x"\n}\n', "line 1",
                 "(JSON Lines files hold one document a line)", id="pretty-json-in-jsonl"),
    pytest.param("bad.json", b"  \n", "line 1", "empty file: there is nothing to import",
                 id="empty"),
    pytest.param("bad.json", orjson.dumps(group_page(completed(1), {"status": status(TASK_A, []),
                                                          "task": definition(taskGroupId=None)})),
                 "tasks[1].task.taskGroupId", "expected a string, got null",
                 id="null-task-group"),
    pytest.param("bad.json", orjson.dumps(group_page(completed(1), {
        "status": status(TASK_A, []),
        "task": {k: v for k, v in definition().items() if k != "taskGroupId"}})),
                 "tasks[1].task", "missing required field 'taskGroupId'", id="missing-field"),
    pytest.param("bad.json", orjson.dumps(group_page({
        "status": status(TASK_A, []) | {"state": "bogus"}, "task": definition()})),
                 "tasks[0].status.state",
                 "'bogus' is not a task state (one of unscheduled, pending, running, completed, "
                 "failed, exception)", id="bad-state"),
    pytest.param("bad.json", orjson.dumps(group_page({
        "status": status(TASK_A, [run(0, "done")]) | {"state": "completed"},
        "task": definition()})),
                 "tasks[0].status.runs[0].state", "'done' is not a run state", id="bad-run-state"),
    pytest.param("bad.json", orjson.dumps(group_page({
        "status": status(TASK_A, [run(0, scheduled="2026-11-01T10:05:00")]),
        "task": definition()})), "tasks[0].status.runs[0].scheduled",
                 "'2026-11-01T10:05:00' has no time zone", id="naive-timestamp"),
    pytest.param("bad.json", orjson.dumps({"taskId": TASK_A, "task": definition(created="soon")}),
                 "task.created", "'soon' is not an ISO 8601 timestamp", id="bad-timestamp"),
    pytest.param("bad.json", orjson.dumps({"taskId": TASK_A, "task": definition(retries="5")}),
                 "task.retries", "expected a whole number, got the string '5'", id="wrong-type"),
    pytest.param("bad.json", orjson.dumps(group_page({"status": status(TASK_A, [run(1)]),
                                                "task": definition()})),
                 "tasks[0].status.runs[0].runId", "runId 1 at position 0", id="run-order"),
    pytest.param("bad.json", orjson.dumps({"taskId": "short", "task": definition()}),
                 "taskId", "'short' is not a slugid", id="bad-task-id"),
    pytest.param("bad.json", orjson.dumps([group_page(completed(1)), {"statuses": [
        {"taskId": TASK_A, "status": status(TASK_A, [run(0)])}]}]),
                 "[1].statuses[0].status", f"no task definition for the status of {TASK_A}: "
                 "import the definitions first", id="status-without-task"),
    pytest.param("bad.json", orjson.dumps({"statuses": [
        {"taskId": TASK_A, "status": status(TASK_B, [])}]}), "statuses[0].status.taskId",
                 f"is not the taskId '{TASK_A}' this status is listed under", id="id-mismatch"),
    pytest.param("bad.json", orjson.dumps({"foo": 1, "bar": 2}), "top level",
                 "unrecognised document: expected a Taskcluster queue or index response, "
                 "got keys ['bar', 'foo']", id="unrecognised"),
    pytest.param("bad.json", orjson.dumps([group_page(completed(1)), 42]), "[1]",
                 "unrecognised document: expected a Taskcluster queue or index response "
                 "(an object), got the number 42", id="not-an-object"),
    pytest.param("bad.json", orjson.dumps({"tasks": [{"namespace": "a..b", "taskId": TASK_A,
                                                      "rank": 0, "data": {},
                                                      "expires": "2030-01-01T00:00:00Z"}]}),
                 "tasks[0].namespace", "'a..b' is not an index path", id="bad-index-path"),
    pytest.param("bad.json", orjson.dumps({"tasks": [{"namespace": "a.b", "taskId": TASK_A,
                                                      "rank": 0, "expires": "2030-01-01"}]}),
                 "tasks[0]", "missing required field 'data'", id="entry-missing-data"),
    pytest.param("bad.json", orjson.dumps(group_page({"status": status(TASK_A, []),
                                                "task": definition(group=TASK_B)})),
                 "tasks[0].task.taskGroupId", f"'{TASK_B}' is not the taskGroupId '{GROUP}'",
                 id="group-mismatch"),
    pytest.param("bad.json", orjson.dumps(definition()), "top level",
                 "a task definition (a queue.task response) carries no taskId, and the file "
                 "name 'bad.json' is not one", id="definition-without-task-id"),
]


@pytest.mark.parametrize(("name", "content", "where", "problem"), BAD_INPUT)
async def test_bad_input_fails_and_writes_nothing(
    pool: asyncpg.Pool, tmp_path: Path, name: str, content: bytes, where: str, problem: str,
) -> None:
    await import_source(pool, write(tmp_path / "earlier.json", [
        group_page(completed(100), completed(101)), entry("kept.entry", tid(100), 1)]))
    before = await snapshot(pool)
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(ImportFailed) as failed:
        # Small batches: the valid part of the file is written before the bad part is read.
        await import_source(pool, str(path), batch_size=1)
    error = failed.value
    assert (error.source, error.where) == (str(path), where)
    assert problem in error.problem
    assert str(error) == f"{path}: {where}: {error.problem}"
    assert await snapshot(pool) == before


async def test_a_failure_after_many_batches_rolls_everything_back(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    lines = [group_page(*[completed(n) for n in range(start, start + 25)])
             for start in range(0, 200, 25)]
    lines.append({"tasks": [entry(f"ns.e{n}", tid(n), n) for n in range(50)]})
    lines.append(group_page(completed(500), {"status": status(tid(501), []) | {"state": "bogus"},
                                    "task": definition()}))
    with pytest.raises(ImportFailed) as failed:
        await import_source(pool, write_lines(tmp_path / "half.jsonl", lines), batch_size=10)
    assert failed.value.where == "line 10, tasks[1].status.state"
    assert await counts(pool) == (0, 0, 0, 0)

    # Without the bad line, all of it goes in.
    summary = await import_source(pool, write_lines(tmp_path / "good.jsonl", lines[:-1]),
                                  batch_size=10)
    assert (summary.tasks, summary.statuses, summary.index_entries) == (200, 200, 50)
    assert (await counts(pool))[0] == 200
