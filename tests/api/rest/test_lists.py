"""The list methods (task group, dependents, namespaces, index entries): Taskcluster's order and
pages, beyond what the recording holds (more than 1,000 rows, exact multiples of `limit`)."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from factories import FAR, FakeTask, slug, store
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app

GROUP = slug(5 * 10**11)
# Taskcluster's order of these names (en-US: punctuation, digits, then letters, a < A < b).
NAMES = ["_x", "-x", "1", "a", "A", "a-b", "aB", "b", "B", "Ba"]


def en_us(value: str) -> tuple[list[int], list[bool]]:
    """The collation's order for these characters: case-insensitive, then lower before upper."""
    order = "_-!'()*%~0123456789abcdefghijklmnopqrstuvwxyz"
    return [order.index(c.lower()) for c in value], [c.isupper() for c in value]


async def walk(client: httpx.AsyncClient, path: str,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Every page of a list method, following its tokens."""
    pages: list[dict[str, Any]] = []
    token = None
    while True:
        params = {**({"limit": str(limit)} if limit is not None else {}),
                  **({"continuationToken": token} if token else {})}
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        token = pages[-1].get("continuationToken")
        if token is None:
            return pages


async def test_a_task_group_of_1005_tasks_pages_as_taskcluster_does(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    tasks = [FakeTask(task_group_id=GROUP) for _ in range(1005)]
    await store(pool, tasks)
    path = f"/api/queue/v1/task-group/{GROUP}/list"
    expected = sorted((t.task_id for t in tasks), key=en_us)
    for limit in (None, 5000):
        pages = await walk(client, path, limit)
        assert [len(p["tasks"]) for p in pages] == [1000, 5]
    assert [t["status"]["taskId"] for p in pages for t in p["tasks"]] == expected
    first = pages[0]
    assert {k: first[k] for k in ("taskGroupId", "schedulerId", "expires")} == {
        "taskGroupId": GROUP, "schedulerId": "gecko-level-3", "expires": "2027-11-01T01:00:00.000Z"}
    assert first["tasks"][0]["task"] == next(
        t for t in tasks if t.task_id == expected[0]).definition()
    # An exact multiple of the limit: the last page has no token.
    exact = await walk(client, path, 201)
    assert [len(p["tasks"]) for p in exact] == [201] * 5
    response = await client.get(path, params={"limit": "201"})
    # The page, and the definitions of its tasks.
    assert orjson.loads(response.headers["tcgraph-sql"])["statements"] <= 3
    assert (await client.get(path, params={"limit": "0"})).json()["tasks"] == []


async def test_dependents_are_listed_in_taskcluster_order(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    parent = FakeTask(task_group_id=GROUP)
    children = [FakeTask(task_group_id=GROUP, dependencies=[parent.task_id]) for _ in range(30)]
    await store(pool, [parent, *children])
    pages = await walk(client, f"/api/queue/v1/task/{parent.task_id}/dependents", 7)
    assert [len(p["tasks"]) for p in pages] == [7, 7, 7, 7, 2]
    assert all(p["taskId"] == parent.task_id for p in pages)
    assert [t["status"]["taskId"] for p in pages for t in p["tasks"]] == sorted(
        (c.task_id for c in children), key=en_us)
    none = await client.get(f"/api/queue/v1/task/{children[0].task_id}/dependents")
    assert none.json() == {"taskId": children[0].task_id, "tasks": []}


async def test_namespaces_and_entries_are_listed_in_taskcluster_order(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    assert sorted(NAMES, key=en_us) == NAMES
    task = FakeTask()
    shuffled = NAMES[::3] + NAMES[1::3] + NAMES[2::3]
    await store(pool, [task], entries=[
        *((f"proj.{name}.leaf", task.task_id, 0, FAR) for name in shuffled),
        *((f"proj.{name}", task.task_id, 0, FAR) for name in shuffled)])
    namespaces = await walk(client, "/api/index/v1/namespaces/proj", 3)
    assert [n["name"] for p in namespaces for n in p["namespaces"]] == NAMES
    assert namespaces[0]["namespaces"][0] == {
        "namespace": "proj._x", "name": "_x", "expires": "2099-01-02T00:00:00.000Z"}
    entries = await walk(client, "/api/index/v1/tasks/proj", 4)
    assert [len(p["tasks"]) for p in entries] == [4, 4, 2]
    assert [t["namespace"] for p in entries for t in p["tasks"]] == [f"proj.{n}" for n in NAMES]
    root = await client.get("/api/index/v1/namespaces/")
    assert [n["namespace"] for n in root.json()["namespaces"]] == ["proj"]
    absent = await client.get("/api/index/v1/tasks/no.such.namespace")
    assert absent.json() == {"tasks": []}


async def test_the_real_client_follows_list_tokens(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    tasks = [FakeTask(task_group_id=GROUP) for _ in range(12)]
    await store(pool, tasks)
    with serving(create_app(settings, database_url)) as root:
        queue = taskcluster.Queue({"rootUrl": root})
        pages: list[dict[str, Any]] = []
        queue.listTaskGroup(GROUP, query={"limit": 5}, paginationHandler=pages.append)
        assert [len(p["tasks"]) for p in pages] == [5, 5, 2]
        assert queue.getTaskGroup(GROUP)["taskGroupId"] == GROUP
        with pytest.raises(TaskclusterRestFailure) as raised:
            queue.listTaskGroup(slug(6 * 10**11))
        assert raised.value.status_code == 404
        assert raised.value.body["code"] == "ResourceNotFound"


async def test_ranks_no_64_bit_integer_holds_are_written_as_the_index_service_writes_them(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    task = FakeTask()
    await store(pool, [task], entries=[
        ("proj.huge", task.task_id, float(2**64), FAR),
        ("proj.half", task.task_id, 0.5, FAR),
        ("proj.whole", task.task_id, 41, FAR)])
    huge = await client.get("/api/index/v1/task/proj.huge")
    assert huge.status_code == 200, huge.text
    # JavaScript's JSON.stringify(2 ** 64): shortest digits, padded with zeros.
    assert b'"rank":18446744073709552000' in huge.content
    found = await client.post("/api/index/v1/tasks/indexes",
                              json={"indexes": ["proj.huge", "proj.half", "proj.whole"]})
    assert found.status_code == 200, found.text
    ranks = {t["namespace"]: t["rank"] for t in found.json()["tasks"]}
    assert ranks == {"proj.huge": 2**64 + 384, "proj.half": 0.5, "proj.whole": 41}
    assert isinstance(ranks["proj.whole"], int)
