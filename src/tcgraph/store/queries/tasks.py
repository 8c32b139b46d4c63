"""Reads of the `tasks` table: by id, latest per label, label history, group pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from collections.abc import Sequence

import asyncpg

from tcgraph.model import JsonNode, Page, Run, State, Task, TaskFilter, TaskGroup
from tcgraph.store.pool import Database
from tcgraph.store.queries.json_lists import KeyList, fetch_lists
from tcgraph.store.queries.pages import BEFORE_ALL, en_us_after, en_us_order, split_pages
from tcgraph.store.sqlfrag import SqlFragment, Template, raw

# Everything but the definition, which definitions_by_id fetches when needed.
TASK_COLUMNS = """t.task_id, t.task_group_id, t.scheduler_id, t.task_queue_id, t.project_id,
    t.label, t.priority, t.retries, t.retries_left, t.created, t.deadline, t.expires,
    t.state, t.runs"""

# A dict lookup is several times cheaper than calling the Enum, per row.
_STATES = {state.value: state for state in State}


def _run(raw: dict[str, Any]) -> Run:
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


# --- the same lookups answered as JSON built in PostgreSQL (api/sqljson.py) ---

# tasks_pkey: one probe per id; ids not stored answer null.
_TASKS_JSON = Template("""
SELECT k.list, {values}
FROM unnest($1::int[], $2::int[], $3::text[]) WITH ORDINALITY AS k(list, shape, task_id, ord)
LEFT JOIN LATERAL (SELECT * FROM tasks t WHERE t.task_id = k.task_id LIMIT 1) t ON true
GROUP BY k.list""")


async def tasks_json(db: Database, shapes: Sequence[SqlFragment],
                     id_lists: Sequence[tuple[Sequence[str], int]]) -> list[str]:
    """Per (ids, shape number), the JSON array of that shape over each task `t` (null: none)."""
    return await fetch_lists(db, _TASKS_JSON, raw("t.task_id"), shapes,
                             [KeyList([ids], shape) for ids, shape in id_lists])


# The labels statement's rows carry the filter, so that `latest` and the
# last_* subqueries below read it from their parent row.
_LABELS_JSON = Template("""
SELECT k.list, {values}
FROM (
    SELECT k.list, k.shape, k.label, k.ord, $4::text AS project_id, $5::text AS scheduler_id,
           $6::text AS task_queue_id, $7::jsonb AS tags
    FROM unnest($1::int[], $2::int[], $3::text[]) WITH ORDINALITY AS k(list, shape, label, ord)
) k
GROUP BY k.list""")


async def labels_json(db: Database, shapes: Sequence[SqlFragment],
                      label_lists: Sequence[tuple[Sequence[str], int]],
                      task_filter: TaskFilter) -> list[str]:
    """Per (labels, shape number), the JSON array of that shape over each label row `k`.

    `k` has `label` and the filter's columns, which `LATEST_JSON` reads.
    """
    return await fetch_lists(db, _LABELS_JSON, raw("k.label"), shapes,
                             [KeyList([labels], shape) for labels, shape in label_lists],
                             *_filter_args(task_filter))


# For each label row `{row}` (see _LABELS_JSON): its newest task, optionally
# the newest completed / failed one, restricted by the row's filter. `{json}`
# is the task's JSON over `{child}`; the index is the one _OUTCOMES names.
LATEST_JSON = {
    outcome: f"""(
    SELECT {{json}} FROM tasks {{child}}
    WHERE {{child}}.label = {{row}}.label AND {predicate.replace("t.", "{child}.")}
      AND ({{row}}.project_id IS NULL OR {{child}}.project_id = {{row}}.project_id)
      AND ({{row}}.scheduler_id IS NULL OR {{child}}.scheduler_id = {{row}}.scheduler_id)
      AND ({{row}}.task_queue_id IS NULL OR {{child}}.task_queue_id = {{row}}.task_queue_id)
      AND ({{row}}.tags IS NULL OR {{child}}.definition -> 'tags' @> {{row}}.tags)
    ORDER BY {{child}}.created DESC, {{child}}.task_id DESC   -- {index}
    LIMIT 1)"""
    for outcome, (predicate, index) in _OUTCOMES.items()
}

# tasks_pkey: the task a row's `task_id` names, or null.
TASK_JSON = "(SELECT {json} FROM tasks {child} WHERE {child}.task_id = {row}.task_id)"

# tasks_pkey per id: the stored tasks among the first {first} of the definition's
# dependencies, in its order (repeats included), as Task.dependencies answers them.
# (`dependency_ids` and `dependency` name nothing outside the subquery, whatever
# `{row}` is: the compiled aliases are quoted "j1", "j2", ...)
DEPENDENCIES_JSON = """(
    SELECT COALESCE(json_agg({json} ORDER BY {child}.dependency_n), '[]'::json)
    FROM (
        SELECT dependency.*, dependency_ids.n AS dependency_n
        FROM jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof({row}.definition -> 'dependencies') = 'array'
                      THEN {row}.definition -> 'dependencies' ELSE '[]'::jsonb END)
             WITH ORDINALITY AS dependency_ids(task_id, n)
        JOIN tasks dependency ON dependency.task_id = dependency_ids.task_id
        WHERE dependency_ids.n <= {first}
    ) {child})"""

# A task's runs, in order, each a row `{child}` with the run in `run`.
RUNS_JSON = """(
    SELECT COALESCE(json_agg({json} ORDER BY {child}.n), '[]'::json)
    FROM jsonb_array_elements({row}.runs) WITH ORDINALITY AS {child}(run, n))"""


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


def json_node(r: asyncpg.Record) -> JsonNode:
    """A page row selected as `key` and `json` (JSON_NODE_COLUMNS)."""
    return JsonNode(key=r["key"], json=r["json"])


_JSON_NODE_COLUMNS = Template("t.task_id AS key, ({shape})::text AS json")


def json_node_columns(shape: SqlFragment) -> SqlFragment:
    """The columns of a page row answered as JSON: the task id (its cursor) and `shape`."""
    return _JSON_NODE_COLUMNS(shape=shape)


# By whether the page is of one state: the statement, its columns left to fill.
_GROUP_JSON_PAGE = {
    with_state: Template(_GROUP_PAGE.format(
        columns="{columns}", before_all=BEFORE_ALL,
        state="AND t.state = k.state" if with_state else "",
        index="tasks_group_state" if with_state else "tasks_group"))
    for with_state in (True, False)
}


async def task_group_json_pages(
    db: Database, shape: SqlFragment, keys: Sequence[tuple[str, State | None, str | None, int]]
) -> list[Page]:
    """As task_group_pages, each row a JsonNode of `shape` over the task `t`."""
    with_state = keys[0][1] is not None
    statement = _GROUP_JSON_PAGE[with_state](columns=json_node_columns(shape)).render()
    rows = await db.fetch(
        statement,
        [group for group, _, _, _ in keys],
        [state.value if state else None for _, state, _, _ in keys],
        [after for _, _, after, _ in keys],
        [limit for _, _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys], json_node)

