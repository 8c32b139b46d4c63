"""Reads of the `tasks` table: by id, latest per label, label history, group pages."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import asyncpg

from tcgraph.model import Page, Run, State, Task, TaskFilter, TaskGroup
from tcgraph.store.pool import Database
from tcgraph.store.queries.pages import BEFORE_ALL, en_us_after, en_us_order, split_pages

# Everything but the definition, which definitions_by_id fetches when needed.
TASK_COLUMNS = """t.task_id, t.task_group_id, t.scheduler_id, t.task_queue_id, t.project_id,
    t.label, t.priority, t.retries, t.retries_left, t.created, t.deadline, t.expires,
    t.state, t.runs"""

# A dict lookup is several times cheaper than calling the Enum, per row.
_STATES = {state.value: state for state in State}


def _run(raw: dict) -> Run:
    return Run(
        run_id=raw["runId"],
        state=_STATES[raw["state"]],
        reason_created=raw["reasonCreated"],
        reason_resolved=raw.get("reasonResolved"),
        worker_group=raw.get("workerGroup"),
        worker_id=raw.get("workerId"),
        taken_until=raw.get("takenUntil"),
        scheduled=raw["scheduled"],
        started=raw.get("started"),
        resolved=raw.get("resolved"),
    )


def task_row(r: asyncpg.Record) -> Task:
    """A `Task` from a row holding TASK_COLUMNS."""
    return Task(
        task_id=r["task_id"],
        task_group_id=r["task_group_id"],
        scheduler_id=r["scheduler_id"],
        task_queue_id=r["task_queue_id"],
        project_id=r["project_id"],
        label=r["label"],
        priority=r["priority"],
        retries=r["retries"],
        retries_left=r["retries_left"],
        created=r["created"],
        deadline=r["deadline"],
        expires=r["expires"],
        state=_STATES[r["state"]],
        runs=tuple(map(_run, r["runs"])),
    )


# tasks_pkey
_TASKS_BY_ID = f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.task_id = ANY($1::text[])"


async def tasks_by_id(db: Database, task_ids: Sequence[str]) -> dict[str, Task]:
    """The tasks that exist among `task_ids`, by id."""
    return {r["task_id"]: task_row(r) for r in await db.fetch(_TASKS_BY_ID, list(task_ids))}


# tasks_pkey
_DEFINITIONS_BY_ID = """
SELECT t.task_id, t.definition::text AS definition FROM tasks t WHERE t.task_id = ANY($1::text[])"""


async def definitions_by_id(db: Database, task_ids: Sequence[str]) -> dict[str, str]:
    """The stored definitions (JSON text) of the tasks that exist among `task_ids`."""
    rows = await db.fetch(_DEFINITIONS_BY_ID, list(task_ids))
    return {r["task_id"]: r["definition"] for r in rows}


_FILTER = """
      AND ($2::text IS NULL OR t.project_id = $2)
      AND ($3::text IS NULL OR t.scheduler_id = $3)
      AND ($4::text IS NULL OR t.task_queue_id = $4)
      AND ($5::jsonb IS NULL OR t.definition -> 'tags' @> $5::jsonb)"""

# The outcome is spelled out in the SQL, not passed as a parameter, so that the
# planner matches it to the partial index that holds only those rows.
_OUTCOMES = {
    "latest": ("TRUE", "tasks_label_created"),
    "success": ("t.state = 'completed'", "tasks_label_completed"),
    "failure": ("t.state IN ('failed', 'exception')", "tasks_label_failed"),
}

_LATEST_BY_LABEL = {
    outcome: f"""
SELECT k.ord, {TASK_COLUMNS}
FROM unnest($1::text[]) WITH ORDINALITY AS k(label, ord)
CROSS JOIN LATERAL (
    SELECT * FROM tasks t
    WHERE t.label = k.label AND {predicate}{_FILTER}
    ORDER BY t.created DESC, t.task_id DESC   -- {index}
    LIMIT 1
) t"""
    for outcome, (predicate, index) in _OUTCOMES.items()
}


def _filter_args(f: TaskFilter) -> tuple[str | None, str | None, str | None, str | None]:
    return (f.project_id, f.scheduler_id, f.task_queue_id, f.tags)


async def latest_by_label(
    db: Database, labels: Sequence[str], task_filter: TaskFilter, outcome: str = "latest"
) -> list[Task | None]:
    """For each label, its newest task (optionally: newest completed / failed)."""
    found: list[Task | None] = [None] * len(labels)
    rows = await db.fetch(_LATEST_BY_LABEL[outcome], list(labels), *_filter_args(task_filter))
    for r in rows:
        found[r["ord"] - 1] = task_row(r)
    return found


# tasks_label_created: a keyset probe per label, newest first.
_LABEL_HISTORY = f"""
SELECT k.ord, {TASK_COLUMNS}
FROM unnest($1::text[], $6::timestamptz[], $7::text[], $8::int[])
     WITH ORDINALITY AS k(label, after_created, after_id, lim, ord)
CROSS JOIN LATERAL (
    SELECT * FROM tasks t
    WHERE t.label = k.label
      AND (t.created, t.task_id) < (COALESCE(k.after_created, 'infinity'), COALESCE(k.after_id, ''))
      {_FILTER}
    ORDER BY t.created DESC, t.task_id DESC
    LIMIT k.lim + 1
) t"""


async def label_history(
    db: Database,
    keys: Sequence[tuple[str, tuple[datetime, str] | None, int]],
    task_filter: TaskFilter,
) -> list[Page]:
    """One page of each label's tasks, newest first: keys are (label, after, limit)."""
    rows = await db.fetch(
        _LABEL_HISTORY,
        [label for label, _, _ in keys],
        *_filter_args(task_filter),
        [after[0] if after else None for _, after, _ in keys],
        [after[1] if after else None for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for _, _, limit in keys], task_row)


# tasks_group
_GROUPS_EXIST = """
SELECT k.id FROM unnest($1::text[]) AS k(id)
WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.task_group_id = k.id)"""


async def task_groups_exist(db: Database, group_ids: Sequence[str]) -> set[str]:
    """The ids among `group_ids` that have at least one task."""
    return {r["id"] for r in await db.fetch(_GROUPS_EXIST, list(group_ids))}


_GROUP_PAGE = """
SELECT k.ord, {columns}
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
     WITH ORDINALITY AS k(group_id, state, after_id, lim, ord)
CROSS JOIN LATERAL (
    SELECT * FROM tasks t
    WHERE t.task_group_id = k.group_id {state}
      AND t.task_id > COALESCE(k.after_id, '{before_all}')
    ORDER BY t.task_id   -- {index}
    LIMIT k.lim + 1
) t"""
_GROUP_PAGE_ANY_STATE = _GROUP_PAGE.format(
    columns=TASK_COLUMNS, state="", before_all=BEFORE_ALL, index="tasks_group")
_GROUP_PAGE_IN_STATE = _GROUP_PAGE.format(
    columns=TASK_COLUMNS, state="AND t.state = k.state", before_all=BEFORE_ALL,
    index="tasks_group_state")


async def task_group_pages(
    db: Database, keys: Sequence[tuple[str, State | None, str | None, int]]
) -> list[Page]:
    """One page of each group's tasks by task id: keys are (group, state, after, limit).

    All keys of one call must agree on whether a state is given (the loader
    groups them), so each statement uses the one index that fits it.
    """
    with_state = keys[0][1] is not None
    rows = await db.fetch(
        _GROUP_PAGE_IN_STATE if with_state else _GROUP_PAGE_ANY_STATE,
        [group for group, _, _, _ in keys],
        [state.value if state else None for _, state, _, _ in keys],
        [after for _, _, after, _ in keys],
        [limit for _, _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys], task_row)


# tasks_group_created: the group's first task. The queue creates a task group with
# its first task, the group expiring an hour after that task (and never later on).
_TASK_GROUPS = """
SELECT k.id, t.scheduler_id, t.expires + interval '1 hour' AS expires
FROM unnest($1::text[]) AS k(id)
CROSS JOIN LATERAL (
    SELECT t.scheduler_id, t.expires FROM tasks t
    WHERE t.task_group_id = k.id
    ORDER BY t.created, t.task_id
    LIMIT 1
) t"""


async def task_groups(db: Database, group_ids: Sequence[str]) -> dict[str, TaskGroup]:
    """The groups among `group_ids` that have a task, by id, as the queue describes them."""
    return {r["id"]: TaskGroup(task_group_id=r["id"], scheduler_id=r["scheduler_id"],
                              expires=r["expires"])
            for r in await db.fetch(_TASK_GROUPS, list(group_ids))}


# tasks_group_en_us: Taskcluster's listTaskGroup order.
_GROUP_PAGE_EN_US = f"""
SELECT k.ord, {TASK_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(group_id, after_id, lim, ord)
CROSS JOIN LATERAL (
    SELECT * FROM tasks t
    WHERE t.task_group_id = k.group_id AND {en_us_after("t.task_id", "k.after_id")}
    ORDER BY {en_us_order("t.task_id")}
    LIMIT k.lim + 1
) t"""


async def task_group_pages_en_us(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of each group's tasks in Taskcluster's order: keys are (group, after, limit)."""
    rows = await db.fetch(
        _GROUP_PAGE_EN_US,
        [group for group, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys], task_row)
