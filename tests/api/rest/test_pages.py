"""Batch methods' pages: limits, continuation tokens and the SQL each page costs."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from api.rest.expect import assert_taskcluster_error, expected_status, sql
from factories import FakeTask, store
from tcgraph.api.context import Context
from tcgraph.api.rest import shapes
from tcgraph.config import Settings


async def test_pages_cover_every_key_once_with_sql_for_their_own_slice(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    known = [FakeTask() for _ in range(20)]
    await store(pool, known)
    ids = [t.task_id for t in known[:10]] + ["unknown-1"] + [t.task_id for t in known[10:]]
    seen: list[str] = []
    pages = 0
    token = None
    while True:
        params = {"limit": "7", **({"continuationToken": token} if token else {})}
        response = await client.post("/api/queue/v1/tasks/status", params=params,
                                     json={"taskIds": ids})
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [s["taskId"] for s in body["statuses"]]
        # The page's own keys and the one after, and a few more when that one is unknown.
        assert sql(response)["statements"] <= 2
        assert len(body["statuses"]) == (7 if pages < 3 else 6)
        token = body.get("continuationToken")
        if token is None:
            break
    assert pages == 3  # 21 keys, 7 a page
    assert seen == [t.task_id for t in known]


async def test_a_full_page_of_1000_ids_is_one_statement(pool: asyncpg.Pool,
                                                        client: httpx.AsyncClient) -> None:
    known = [FakeTask() for _ in range(2500)]
    await store(pool, known)
    ids = [t.task_id for t in known]
    first = await client.post("/api/queue/v1/tasks/status", json={"taskIds": ids})
    body = first.json()
    assert len(body["statuses"]) == 1000
    # One statement for the page's keys and the one that says another page follows.
    assert sql(first) == {**sql(first), "statements": 1, "rows": 1001}
    second = await client.post("/api/queue/v1/tasks/status",
                               params={"continuationToken": body["continuationToken"]},
                               json={"taskIds": ids})
    assert [s["taskId"] for s in second.json()["statuses"]] == ids[1000:2000]
    assert sql(second)["statements"] == 1 and sql(second)["rows"] == 1001
    # As Taskcluster's, a token is a position: the same in every batch method.
    last = await client.post("/api/queue/v1/tasks",
                             params={"continuationToken": second.json()["continuationToken"]},
                             json={"taskIds": ids})
    assert [t["taskId"] for t in last.json()["tasks"]] == ids[2000:]
    assert "continuationToken" not in last.json()


async def test_one_page_through_the_shared_loaders_is_one_statement(
        pool: asyncpg.Pool, settings: Settings) -> None:
    known = [FakeTask() for _ in range(1000)]
    await store(pool, known)
    context = Context.create(pool, settings)
    found = await context.loaders.task.load_many([t.task_id for t in known])
    assert [shapes.status_json(t)["taskId"] for t in found] == [t.task_id for t in known]
    assert context.db.stats.statements == 1


async def test_duplicates_are_answered_once_and_paged_over_once(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    a, b = FakeTask(), FakeTask()
    await store(pool, [a, b])
    body = {"taskIds": [a.task_id, a.task_id, a.task_id, b.task_id]}
    first = await client.post("/api/queue/v1/tasks", params={"limit": 1}, json=body)
    assert [t["taskId"] for t in first.json()["tasks"]] == [a.task_id]
    second = await client.post("/api/queue/v1/tasks", json=body, params={
        "limit": 1, "continuationToken": first.json()["continuationToken"]})
    assert second.json() == {"tasks": [{"taskId": b.task_id, "task": b.definition()}]}


async def test_no_keys_and_no_matches(client: httpx.AsyncClient) -> None:
    empty = await client.post("/api/queue/v1/tasks", json={"taskIds": []})
    assert empty.json() == {"tasks": []}
    # A missing list is the empty list, as Taskcluster's input schema defaults it.
    missing = await client.post("/api/queue/v1/tasks/status", json={})
    assert missing.status_code == 200 and missing.json() == {"statuses": []}
    none = await client.post("/api/index/v1/tasks/indexes", json={"indexes": ["a.b", "c"]})
    assert none.json() == {"tasks": []}


@pytest.mark.parametrize("limit", ["-1", "ten", "1.5", "١٢", ""])
async def test_bad_limits(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.post("/api/index/v1/tasks/indexes", params={"limit": limit},
                                 json={"indexes": ["a"]})
    assert_taskcluster_error(response, 400, "InvalidRequestArguments", "findTasksAtIndex",
                             f'Query-string parameter: limit="{limit}" does not match '
                             "expression: /^[0-9]+$/")


async def test_limits_are_clamped_and_zero_is_an_empty_page(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    known = [FakeTask() for _ in range(1005)]
    await store(pool, known)
    ids = [t.task_id for t in known]
    for limit in ("1001", "5000", "1" * 5000):
        clamped = await client.post("/api/queue/v1/tasks/status", params={"limit": limit},
                                    json={"taskIds": ids})
        assert clamped.status_code == 200, clamped.text
        assert len(clamped.json()["statuses"]) == 1000 and clamped.json()["continuationToken"]
    zero = await client.post("/api/queue/v1/tasks/status", params={"limit": "0"},
                             json={"taskIds": ids})
    assert zero.json() == {"statuses": []}


async def test_tokens_are_read_as_taskcluster_reads_its_own(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    known = [FakeTask(label=f"label-{n}") for n in range(3)]
    await store(pool, known)
    labels = {"labels": [t.label for t in known]}
    first = await client.post("/api/tcgraph/v1/labels/status", params={"limit": 2}, json=labels)
    assert list(first.json()["mapping"]) == ["label-0", "label-1"]
    token = first.json()["continuationToken"]
    assert token.isalnum()
    again = await client.post("/api/tcgraph/v1/labels/status",
                              params={"continuationToken": token, "limit": 2}, json=labels)
    assert again.json() == {"mapping": {"label-2": expected_status(known[2])}}
    # Letters and digits that decode to nothing start from the beginning; anything else is
    # refused.
    for bogus in ("bogus", "AAAA"):
        restart = await client.post("/api/tcgraph/v1/labels/status",
                                    params={"continuationToken": bogus, "limit": 2}, json=labels)
        assert restart.json() == first.json()
    for bad in ("bogus-token", "not a token!"):
        response = await client.post("/api/tcgraph/v1/labels/status",
                                     params={"continuationToken": bad}, json=labels)
        assert_taskcluster_error(response, 400, "InputError", "labelStatuses",
                                 "Invalid continuation token")
