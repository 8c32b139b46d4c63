"""tcgraph's own labels/status method: each label's latest task, filtered."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx

from api.rest.expect import assert_taskcluster_error, expected_status
from factories import BASE, FakeTask, store


async def test_labels_map_to_the_status_of_their_latest_task(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    old = FakeTask(label="build", created=BASE, state="failed")
    new = FakeTask(label="build", created=BASE + timedelta(hours=1), project_id="other")
    test = FakeTask(label="test", created=BASE, tags={"os": "linux"})
    await store(pool, [old, new, test])
    everything = await client.post("/api/tcgraph/v1/labels/status",
                                   json={"labels": ["build", "test", "nothing", "build"]})
    assert everything.status_code == 200
    assert everything.json() == {"mapping": {"build": expected_status(new),
                                             "test": expected_status(test)}}
    gecko = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build", "test"], "filter": {"projectId": "gecko"}})
    assert gecko.json() == {"mapping": {"build": expected_status(old),
                                        "test": expected_status(test)}}
    tagged = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build", "test"], "filter": {"tags": {"os": "linux"}, "schedulerId": None}})
    assert tagged.json() == {"mapping": {"test": expected_status(test)}}
    bad = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build"], "filter": {"tags": {"os": 1}}})
    assert_taskcluster_error(bad, 400, "InputValidationError", "labelStatuses",
                             "filter.tags must be an object of strings")
    unknown = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build"], "filter": {"label": "x"}})
    assert_taskcluster_error(unknown, 400, "InputValidationError", "labelStatuses", "`filter`")
