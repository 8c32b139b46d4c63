"""Taskcluster's shapes of what tcgraph stores: statuses, runs, groups, index entries."""

from __future__ import annotations

from decimal import Decimal

import orjson

from tcgraph import model
from tcgraph.timefmt import format_time


def run_json(run: model.Run) -> dict[str, object]:
    """One entry of `queue.status`'s `runs`."""
    fields: dict[str, object | None] = {
        "runId": run.run_id,
        "state": run.state.value,
        "reasonCreated": run.reason_created,
        "reasonResolved": run.reason_resolved,
        "workerGroup": run.worker_group,
        "workerId": run.worker_id,
        # Run timestamps are stored in Taskcluster's format already.
        "takenUntil": run.taken_until,
        "scheduled": run.scheduled,
        "started": run.started,
        "resolved": run.resolved,
    }
    # The queue leaves out what a run does not have yet rather than writing null.
    return {name: value for name, value in fields.items() if value is not None}


def status_json(task: model.Task) -> dict[str, object]:
    """The task's status exactly as `queue.status` returns it (inside `{"status": ...}`)."""
    return {
        "taskId": task.task_id,
        "provisionerId": task.provisioner_id,
        "workerType": task.worker_type,
        "taskQueueId": task.task_queue_id,
        "schedulerId": task.scheduler_id,
        "projectId": task.project_id,
        "taskGroupId": task.task_group_id,
        "priority": task.priority,
        "deadline": format_time(task.deadline),
        "expires": format_time(task.expires),
        "retriesLeft": task.retries_left,
        "state": task.state.value,
        "runs": [run_json(run) for run in task.runs],
    }


def definition_json(definition: str) -> orjson.Fragment:
    """A stored definition, passed through as its stored JSON text."""
    return orjson.Fragment(definition)


def status_and_task_json(task: model.Task, definition: str) -> dict[str, object]:
    """An element of `listTaskGroup` and `listDependentTasks`."""
    return {"status": status_json(task), "task": definition_json(definition)}


def task_group_json(group: model.TaskGroup) -> dict[str, object]:
    """`getTaskGroup`'s reply, and the head of `listTaskGroup`'s."""
    return {"taskGroupId": group.task_group_id, "schedulerId": group.scheduler_id,
            "expires": format_time(group.expires)}


def rank_json(rank: float) -> object:
    """A stored rank written as the index service (JavaScript) writes that number.

    Ranks are doubles to Taskcluster; a whole one is written without a fraction
    (41, not 41.0), and one of 2^53 or more with JavaScript's shortest digits
    padded with zeros (2^64 is 18446744073709552000), which no 64-bit integer
    holds, so it goes out as raw JSON text. From 1e21 on JavaScript switches to
    exponent notation, which orjson's float output already is.
    """
    if not rank.is_integer() or abs(rank) >= 1e21:
        return rank
    whole = int(Decimal(repr(rank)))
    return whole if -2**63 <= whole < 2**63 else orjson.Fragment(str(whole).encode())


def indexed_task_json(entry: model.IndexEntry, path: str) -> dict[str, object]:
    """An index entry as `index.findTask` returns it, its `namespace` being `path` as asked."""
    return {
        "namespace": path,
        "taskId": entry.task_id,
        "rank": rank_json(entry.rank),
        "data": orjson.Fragment(entry.data),
        "expires": format_time(entry.expires),
    }


def namespace_json(namespace: model.Namespace) -> dict[str, object]:
    """An element of `index.listNamespaces`."""
    return {"namespace": namespace.path, "name": namespace.path.rpartition(".")[2],
            "expires": format_time(namespace.expires) if namespace.expires else None}
