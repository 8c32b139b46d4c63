"""Checks a mirror's answers against the recorded REST answers of the real deployment.

Compared as a client would: JSON values (object key order is not part of an
answer), and task groups as sets (Taskcluster orders them by its collation).
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

from servers import asgi_client
from services.replay import Recording
from tcgraph.config import Settings
from tcgraph.server import create_app


def comparable_status(status: dict[str, Any]) -> dict[str, Any]:
    """A status without what no message carries: a running run's `takenUntil` moves
    with reclaims, which publish no message (the recording's oracle is later)."""
    shown = copy.deepcopy(status)
    for run in shown["status"]["runs"]:
        if run["state"] == "running":
            run.pop("takenUntil", None)
    return shown


async def mismatches(pool: asyncpg.Pool, rec: Recording, database_url: str) -> list[str]:
    """Every answer that differs from the recording, described (empty when all agree)."""
    app = create_app(Settings(database_url=database_url, allowed_hosts="tcgraph.test"),
                     database_url)
    found: list[str] = []
    async with asgi_client(app, pool) as client:
        for task_id, definition in rec.definitions.items():
            answer = await client.get(f"/api/queue/v1/task/{task_id}")
            if answer.status_code != 200 or answer.json() != definition:
                found.append(f"queue.task {task_id}: {answer.status_code} {answer.text[:200]}")
            answer = await client.get(f"/api/queue/v1/task/{task_id}/status")
            if answer.status_code != 200 or (comparable_status(answer.json())
                                             != comparable_status(rec.statuses[task_id])):
                found.append(f"queue.status {task_id}: {answer.status_code} {answer.text[:300]}"
                             f" != {rec.statuses[task_id]}")
        for path, entry in rec.found.items():
            answer = await client.get(f"/api/index/v1/task/{quote(path)}")
            if answer.status_code != 200 or answer.json() != entry:
                found.append(f"index.findTask {path}: {answer.status_code} {answer.text[:200]}"
                             f" != {entry}")
        for path in rec.absent_paths:
            answer = await client.get(f"/api/index/v1/task/{quote(path)}")
            if answer.status_code != 404:
                found.append(f"index.findTask {path}: {answer.status_code}, recorded 404")
        for group, ids in rec.groups.items():
            held = await _group(client, group)
            if held != set(ids):
                found.append(f"listTaskGroup {group}: {len(held)} tasks, recorded {len(ids)}: "
                             f"missing {sorted(set(ids) - held)[:5]}, extra "
                             f"{sorted(held - set(ids))[:5]}")
    return found


async def _group(client: httpx.AsyncClient, group: str) -> set[str]:
    """The task ids tcgraph lists in a group (every page of listTaskGroup)."""
    held: set[str] = set()
    query: dict[str, str] = {}
    while True:
        answer = await client.get(f"/api/queue/v1/task-group/{group}/list", params=query)
        if answer.status_code == 404 and not held and "ResourceNotFound" not in answer.text:
            return await _group_graphql(client, group)
        answer.raise_for_status()
        body = answer.json()
        held |= {t["status"]["taskId"] for t in body["tasks"]}
        if not body.get("continuationToken"):
            return held
        query = {"continuationToken": body["continuationToken"]}


async def _group_graphql(client: httpx.AsyncClient, group: str) -> set[str]:
    held: set[str] = set()
    after = None
    while True:
        answer = await client.post("/graphql", json={
            "query": "query($g: ID!, $a: String) { taskGroup(taskGroupId: $g) { "
                     "tasks(first: 1000, after: $a) { edges { node { taskId } } "
                     "pageInfo { hasNextPage endCursor } } } }",
            "variables": {"g": group, "a": after}})
        data = answer.json()["data"]["taskGroup"]
        if data is None:
            return held
        held |= {e["node"]["taskId"] for e in data["tasks"]["edges"]}
        if not data["tasks"]["pageInfo"]["hasNextPage"]:
            return held
        after = data["tasks"]["pageInfo"]["endCursor"]
