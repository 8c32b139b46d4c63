"""Taskcluster answers as a user dumps them, for import tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

# Taskcluster's slugid pattern fixes the 9th, 11th and last characters (tcgraph.keys).
GROUP = "GGGGGGGGQGCGGGGGGGGGGA"
TASK_A = "AAAAAAAAQACAAAAAAAAAAA"
TASK_B = "BBBBBBBBQBCBBBBBBBBBBA"
TASK_C = "CCCCCCCCQCCCCCCCCCCCCA"


# A label as long as Taskcluster allows a tag to be (4,096 characters), drawn
# from the 20,992 CJK ideographs: over 7 KB however PostgreSQL compresses it, so
# over its index row limit (2,704 bytes) for tasks_label_created. (A label of
# fewer distinct characters may compress below the limit.)
_CHOOSE = random.Random(4096)
LONG_LABEL = "".join(chr(_CHOOSE.randrange(0x4E00, 0xA000)) for _ in range(4096))


def tid(n: int) -> str:
    """A valid taskId (Taskcluster's slugid pattern) for `n`."""
    return f"T{n:07d}QTC{n:010d}A"


def definition(group: str = GROUP, **changes: object) -> dict[str, Any]:
    """A definition as `queue.task` returns it."""
    task = {
        "provisionerId": "gecko-3",
        "workerType": "b-linux",
        "taskQueueId": "gecko-3/b-linux",
        "schedulerId": "gecko-level-3",
        "projectId": "firefox",
        "taskGroupId": group,
        "dependencies": [],
        "requires": "all-completed",
        "routes": ["index.gecko.v2.mozilla-central.latest.firefox.linux64-opt"],
        "priority": "low",
        "retries": 3,
        "created": "2026-11-01T10:00:00.000Z",
        "deadline": "2026-11-02T10:00:00.000Z",
        "expires": "2027-11-01T10:00:00.000Z",
        "scopes": ["queue:route:index.gecko.*"],
        "payload": {"image": "ubuntu:24.04", "command": ["./mach", "build"], "maxRunTime": 3600},
        "metadata": {"name": "Build linux64", "description": "a build", "owner": "dev@example.com",
                     "source": "https://hg.mozilla.org/mozilla-central"},
        "tags": {"kind": "build", "label": "build-linux64/opt"},
        "extra": {"treeherder": {"symbol": "B"}},
    }
    task.update(changes)
    return task


def run(run_id: int = 0, state: str = "completed", **changes: object) -> dict[str, Any]:
    """A run in the queue's shape, resolved unless it is pending or running."""
    shaped: dict[str, object] = {
        "runId": run_id, "state": state,
        "reasonCreated": "scheduled" if run_id == 0 else "retry",
        "scheduled": "2026-11-01T10:05:00.000Z",
    }
    if state != "pending":
        shaped |= {"workerGroup": "us-east-1", "workerId": f"i-{run_id}",
                   "takenUntil": "2026-11-01T10:30:00.000Z", "started": "2026-11-01T10:06:00.000Z"}
    if state in ("completed", "failed", "exception"):
        shaped |= {"reasonResolved": "completed" if state == "completed" else state,
                   "resolved": "2026-11-01T10:20:00.000Z"}
    shaped.update(changes)
    return shaped


def status(task_id: str, runs: list[dict[str, Any]], group: str = GROUP,
           retries_left: int = 3) -> dict[str, Any]:
    """A status as `queue.status` returns it (inside `{"status": ...}`)."""
    state = runs[-1]["state"] if runs else "unscheduled"
    return {
        "taskId": task_id, "provisionerId": "gecko-3", "workerType": "b-linux",
        "taskQueueId": "gecko-3/b-linux", "schedulerId": "gecko-level-3", "projectId": "firefox",
        "taskGroupId": group, "deadline": "2026-11-02T10:00:00.000Z",
        "expires": "2027-11-01T10:00:00.000Z", "retriesLeft": retries_left, "state": state,
        "runs": runs,
    }


def group_page(*elements: dict[str, Any]) -> dict[str, Any]:
    """A `queue.listTaskGroup` page of GROUP holding `elements`."""
    return {"taskGroupId": GROUP, "tasks": list(elements)}


def completed(n: int) -> dict[str, Any]:
    """The `n`th of many completed tasks, as a `queue.listTaskGroup` element."""
    return {"status": status(tid(n), [run(0, "completed")]),
            "task": definition(tags={"label": f"l{n}"})}


def entry(path: str, task_id: str, rank: float = 0, data: dict[str, Any] | None = None,
          expires: str = "2030-01-01T00:00:00.000Z") -> dict[str, Any]:
    return {"namespace": path, "taskId": task_id, "rank": rank, "data": data or {},
            "expires": expires}


def write(path: Path, document: object) -> str:
    path.write_bytes(orjson.dumps(document))
    return str(path)


def write_lines(path: Path, documents: Sequence[object]) -> str:
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in documents) + b"\n")
    return str(path)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row, with xmin: a row that was rewritten, even to equal values, differs."""
    return {
        table: [tuple(r) for r in await pool.fetch(
            f"SELECT xmin::text, * FROM {table} ORDER BY {order}")]
        for table, order in (("tasks", "task_id"), ("task_dependencies", "task_id, dependency_id"),
                             ("index_entries", "namespace, name"),
                             ("index_namespaces", "parent, name"))
    }


async def counts(pool: asyncpg.Pool) -> tuple[int, ...]:
    return tuple([await pool.fetchval(f"SELECT count(*) FROM {table}") for table in
                  ("tasks", "task_dependencies", "index_entries", "index_namespaces")])
