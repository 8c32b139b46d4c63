"""Cursors, page sizes, and the connections built on them, against real rows."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from factories import BASE, FAR, FakeTask, store
from graphql_helpers import execute
from tcgraph import pagination
from tcgraph.config import Settings
from tcgraph.errors import BadCursor, BadInput, LimitExceeded


def test_cursor_round_trip_and_opacity() -> None:
    cursor = pagination.encode(pagination.TASK_GROUP, "abc")
    assert "abc" not in cursor
    assert pagination.decode_key(pagination.TASK_GROUP, cursor) == "abc"


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", pagination.encode("g", "a", "b"), "W10"])
def test_malformed_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor, match="malformed"):
        pagination.decode_key(pagination.TASK_GROUP, cursor)


def test_cursor_from_another_connection_is_refused() -> None:
    cursor = pagination.encode(pagination.NAMESPACES, "x")
    with pytest.raises(BadCursor, match="another connection"):
        pagination.decode_key(pagination.TASK_GROUP, cursor)


def test_page_size_defaults_and_limits() -> None:
    settings = Settings(default_page_size=100, max_page_size=1000)
    assert pagination.page_size(None, settings) == 100
    assert pagination.page_size(1000, settings) == 1000
    with pytest.raises(LimitExceeded) as e:
        pagination.page_size(1001, settings)
    assert e.value.extensions == {"code": "LIMIT_EXCEEDED", "limit": "max_page_size",
                                  "value": 1001, "maximum": 1000}
    with pytest.raises(BadInput):
        pagination.page_size(-1, settings)


GROUP_PAGE = """
query ($after: String, $first: Int, $state: TaskState) {
  taskGroup(taskGroupId: "big") {
    tasks(first: $first, after: $after, state: $state) {
      edges { cursor node { taskId } }
      nodes { taskId }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""


async def read_group(pool: asyncpg.Pool, settings: Settings, first: int,
                     state: str | None = None) -> tuple[list[str], list[int]]:
    seen: list[str] = []
    statements: list[int] = []
    after = None
    while True:
        result = await execute(pool, settings, GROUP_PAGE,
                               {"after": after, "first": first, "state": state})
        assert result.errors == []
        statements.append(result.statements)
        conn = result.data["taskGroup"]["tasks"]
        assert [e["node"] for e in conn["edges"]] == conn["nodes"]
        assert conn["pageInfo"]["hasPreviousPage"] is (after is not None)
        if conn["edges"]:
            assert conn["pageInfo"]["startCursor"] == conn["edges"][0]["cursor"]
            assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
        seen.extend(n["taskId"] for n in conn["nodes"])
        if not conn["pageInfo"]["hasNextPage"]:
            return seen, statements
        after = conn["pageInfo"]["endCursor"]


async def test_a_2500_task_group_read_1000_a_page_returns_every_task_once(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tasks = [FakeTask(task_group_id="big", label=f"test-{i}",
                      state="failed" if i % 5 == 0 else "completed") for i in range(2500)]
    await store(pool, tasks + [FakeTask(task_group_id="other")])
    seen, statements = await read_group(pool, settings, 1000)
    assert len(seen) == 2500 and set(seen) == {t.task_id for t in tasks}
    assert seen == sorted(seen)
    assert len(statements) == 3
    # One statement for the group's existence and one for the page.
    assert max(statements) <= 2

    failed, _ = await read_group(pool, settings, 1000, state="FAILED")
    assert set(failed) == {t.task_id for t in tasks if t.state == "failed"}


async def test_pages_are_stable_while_rows_are_added(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tasks = [FakeTask(task_id=f"t{i:03d}", task_group_id="big") for i in range(0, 20, 2)]
    await store(pool, tasks)
    first = await execute(pool, settings, GROUP_PAGE, {"first": 4})
    page = first.data["taskGroup"]["tasks"]
    assert [n["taskId"] for n in page["nodes"]] == ["t000", "t002", "t004", "t006"]
    # Rows added before the cursor do not shift the next page; rows after it appear.
    await store(pool, [FakeTask(task_id="t001", task_group_id="big"),
                       FakeTask(task_id="t007", task_group_id="big")])
    second = await execute(pool, settings, GROUP_PAGE,
                           {"first": 4, "after": page["pageInfo"]["endCursor"]})
    assert [n["taskId"] for n in second.data["taskGroup"]["tasks"]["nodes"]] == [
        "t007", "t008", "t010", "t012"]


async def test_first_zero_and_past_the_end(pool: asyncpg.Pool, settings: Settings) -> None:
    await store(pool, [FakeTask(task_id="only", task_group_id="big")])
    zero = await execute(pool, settings, GROUP_PAGE, {"first": 0})
    assert zero.data["taskGroup"]["tasks"]["nodes"] == []
    assert zero.data["taskGroup"]["tasks"]["pageInfo"]["hasNextPage"] is True
    end = pagination.encode(pagination.TASK_GROUP, "zzzz")
    past = await execute(pool, settings, GROUP_PAGE, {"first": 10, "after": end})
    assert past.data["taskGroup"]["tasks"]["nodes"] == []
    assert past.data["taskGroup"]["tasks"]["pageInfo"] == {
        "hasNextPage": False, "hasPreviousPage": True, "startCursor": None, "endCursor": None}


async def test_bad_cursor_and_oversized_first_are_clear_errors(
        pool: asyncpg.Pool, settings: Settings) -> None:
    await store(pool, [FakeTask(task_group_id="big")])
    bad = await execute(pool, settings, GROUP_PAGE, {"first": 10, "after": "garbage"})
    assert bad.errors[0]["extensions"]["code"] == "BAD_CURSOR"
    assert "TaskGroup.tasks" in bad.errors[0]["message"]
    big = await execute(pool, settings, GROUP_PAGE, {"first": 1001})
    assert big.errors[0]["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert big.errors[0]["extensions"]["maximum"] == 1000
    assert "first" in big.errors[0]["message"]


async def test_label_history_pages_newest_first(pool: asyncpg.Pool, settings: Settings) -> None:
    tasks = [FakeTask(label="lbl", created=BASE + timedelta(hours=i)) for i in range(7)]
    # Two tasks created at the same instant still page in a total order.
    tasks.append(FakeTask(label="lbl", created=BASE + timedelta(hours=3)))
    await store(pool, tasks)
    query = """query ($after: String) { label(label: "lbl") {
        history(first: 3, after: $after) {
            nodes { taskId created } pageInfo { hasNextPage endCursor } } } }"""
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        result = await execute(pool, settings, query, {"after": after})
        history = result.data["label"]["history"]
        seen.extend((n["created"], n["taskId"]) for n in history["nodes"])
        if not history["pageInfo"]["hasNextPage"]:
            break
        after = history["pageInfo"]["endCursor"]
    assert len(seen) == 8 and len(set(seen)) == 8
    assert seen == sorted(seen, reverse=True)


async def test_namespace_browsing_pages(pool: asyncpg.Pool, settings: Settings) -> None:
    target = FakeTask()
    paths = [f"proj.v2.branch{i:02d}.latest.build" for i in range(5)] + ["proj.v2.top"]
    await store(pool, [target], [(p, target.task_id, 0, FAR) for p in paths])
    query = """query ($path: String!, $after: String) { namespace(path: $path) {
        path name
        namespaces(first: 2, after: $after) {
            nodes { path name } pageInfo { hasNextPage endCursor } }
        tasks { nodes { indexPath name taskId } } } }"""
    names: list[str] = []
    after = None
    while True:
        result = await execute(pool, settings, query, {"path": "proj.v2", "after": after})
        ns = result.data["namespace"]
        assert ns["path"] == "proj.v2" and ns["name"] == "v2"
        names.extend(n["path"] for n in ns["namespaces"]["nodes"])
        if not ns["namespaces"]["pageInfo"]["hasNextPage"]:
            break
        after = ns["namespaces"]["pageInfo"]["endCursor"]
    assert names == [f"proj.v2.branch{i:02d}" for i in range(5)]
    assert ns["tasks"]["nodes"] == [{"indexPath": "proj.v2.top", "name": "top",
                                     "taskId": target.task_id}]
    root = await execute(pool, settings, query, {"path": "", "after": None})
    assert [n["path"] for n in root.data["namespace"]["namespaces"]["nodes"]] == ["proj"]
    missing = await execute(pool, settings, query, {"path": "proj.nope", "after": None})
    assert missing.data["namespace"] is None
