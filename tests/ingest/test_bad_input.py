"""Bad input to import: a clear error naming the file, the element and the problem,
and nothing from the file written; input the store can hold comes back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import orjson
import pytest

from ingest.dumps import GROUP, TASK_A, counts, definition, entry, run, status, write
from tcgraph.ingest.files import ImportFailed, import_source

BIG = 2**70


def task_page(**changes: object) -> dict:
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
        pool: asyncpg.Pool, tmp_path: Path, changes: dict, where: str) -> None:
    error = await refused(pool, write(tmp_path / "nul.json", task_page(**changes)))
    assert error.where == where and "NUL" in error.problem


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
        pool: asyncpg.Pool, tmp_path: Path, document: dict, where: str) -> None:
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
