"""Taskcluster-shaped test data, written straight through the store's write SQL.

API tests use this instead of the file importer so that an import bug cannot hide
(or fake) a read-path result; import has round-trip tests of its own.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from tcgraph.ingest import index_rules
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow
from tcgraph.precedence import status_rank
from tcgraph.store import writes
from tcgraph.timefmt import format_time

BASE = datetime(2026, 11, 1, tzinfo=UTC)
FAR = datetime(2099, 1, 1, tzinfo=UTC)
_counter = itertools.count()


def slug(n: int | None = None) -> str:
    """A deterministic taskId that is a valid slugid (a version 4 UUID, as Taskcluster checks)."""
    n = next(_counter) if n is None else n
    raw = bytearray(n.to_bytes(16, "big"))
    raw[6] = 0x40 | (raw[6] & 0x0F)  # the version
    raw[8] = 0x80 | (raw[8] & 0x3F)  # the variant
    return base64.urlsafe_b64encode(bytes(raw)).decode()[:22]


@dataclass
class FakeTask:
    task_id: str = field(default_factory=slug)
    task_group_id: str = "group-a"
    label: str | None = "build-linux64/opt"
    created: datetime = BASE
    state: str = "completed"  # the last run's state; "unscheduled" for no runs
    runs: int = 1
    dependencies: list[str] = field(default_factory=list)
    project_id: str = "gecko"
    scheduler_id: str = "gecko-level-3"
    task_queue_id: str = "gecko-3/b-linux"
    tags: dict[str, str] = field(default_factory=dict)

    def definition(self) -> dict[str, Any]:
        provisioner, worker_type = self.task_queue_id.split("/")
        tags = dict(self.tags)
        if self.label is not None:
            tags.setdefault("label", self.label)
        return {
            "provisionerId": provisioner, "workerType": worker_type,
            "taskQueueId": self.task_queue_id, "schedulerId": self.scheduler_id,
            "projectId": self.project_id, "taskGroupId": self.task_group_id,
            "dependencies": self.dependencies, "requires": "all-completed",
            "routes": [f"index.test.{self.task_id}"], "priority": "low", "retries": 5,
            "created": format_time(self.created),
            "deadline": format_time(self.created + timedelta(days=1)),
            "expires": format_time(self.created + timedelta(days=365)),
            "scopes": [], "payload": {"command": ["true"]},
            "metadata": {"name": self.label or "unnamed", "description": "a test task",
                         "owner": "nobody@example.com", "source": "https://example.com/src"},
            "tags": tags, "extra": {},
        }

    def run_list(self) -> list[dict[str, Any]]:
        if self.state == "unscheduled":
            return []
        runs = []
        for run_id in range(self.runs):
            last = run_id == self.runs - 1
            state = self.state if last else "exception"
            run = {"runId": run_id, "state": state, "reasonCreated": "scheduled" if run_id == 0
                   else "retry", "scheduled": format_time(self.created + timedelta(minutes=1))}
            if state != "pending":
                run.update(workerGroup="us-east-1", workerId=f"i-{run_id}",
                           takenUntil=format_time(self.created + timedelta(minutes=30)),
                           started=format_time(self.created + timedelta(minutes=2)))
            if state in ("completed", "failed", "exception"):
                run.update(reasonResolved="completed" if state == "completed" else state,
                           resolved=format_time(self.created + timedelta(minutes=20)))
            runs.append(run)
        return runs


async def store(pool: asyncpg.Pool, tasks: Sequence[FakeTask] = (),
                entries: Sequence[tuple[str, str, float, datetime]] = ()) -> None:
    """Write tasks (definition + status) and index entries (path, task_id, rank, expires)."""
    async with pool.acquire() as conn, conn.transaction():
        if tasks:
            await writes.upsert_tasks(conn, [
                TaskRow(task_id=t.task_id, task_group_id=t.task_group_id,
                        scheduler_id=t.scheduler_id, task_queue_id=t.task_queue_id,
                        project_id=t.project_id,
                        label=t.definition()["tags"].get("label")
                        or t.definition()["metadata"]["name"],
                        priority="low", retries=5, created=t.created,
                        deadline=t.created + timedelta(days=1),
                        expires=t.created + timedelta(days=365),
                        definition=orjson.dumps(t.definition()).decode(),
                        dependencies=tuple(t.dependencies))
                for t in tasks
            ])
            missing = await writes.update_statuses(conn, [
                StatusRow(task_id=t.task_id, state=t.state,
                          runs=orjson.dumps(t.run_list()).decode(),
                          retries_left=5 - max(t.runs - 1, 0),
                          rank=status_rank([r["state"] for r in t.run_list()]))
                for t in tasks
            ])
            assert missing == []
        if entries:
            rows = []
            for path, task_id, rank, expires in entries:
                namespace, _, name = path.rpartition(".")
                rows.append(IndexEntryRow(namespace=namespace, name=name, task_id=task_id,
                                          rank=rank, data='{"k": 1}', expires=expires))
            await writes.upsert_index_entries(conn, rows)
            await writes.upsert_namespaces(conn, index_rules.namespaces(rows))
