"""Every SQL statement tcgraph runs, with the index each one relies on.

Reads take arrays of keys and answer a whole DataLoader batch in one statement:
`= ANY($1)` for plain key lookups, and `unnest(...) WITH ORDINALITY` plus a
LATERAL probe where each key needs its own ordered, limited scan (latest per
label, one page per parent). A LATERAL probe with a LIMIT stays an index lookup
under every plan PostgreSQL may choose, where a plain join (or a LATERAL
subquery the planner flattens into one) can fall back to hashing a table.

Writes live in store/writes.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Sequence

import asyncpg

from tcgraph.model import IndexEntry, Namespace, Page, Run, State, Task, TaskFilter
from tcgraph.store.pool import Database

# Everything but the definition, which definitions_by_id fetches when needed.
_TASK_COLUMNS = """t.task_id, t.task_group_id, t.scheduler_id, t.task_queue_id, t.project_id,
    t.label, t.priority, t.retries, t.retries_left, t.created, t.deadline, t.expires,
    t.state, t.runs"""

_ENTRY_COLUMNS = "e.namespace, e.name, e.task_id, e.rank, e.data::text AS data, e.expires"

# Sorts below every real key, so `key > COALESCE(after, '')` is an index
# condition on the first page as well as on later ones.
_BEFORE_ALL = ""


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


def _task(r: asyncpg.Record) -> Task:
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


def _entry(r: asyncpg.Record) -> IndexEntry:
    return IndexEntry(
        namespace=r["namespace"], name=r["name"], task_id=r["task_id"],
        rank=r["rank"], data=r["data"], expires=r["expires"],
    )


def _pages(rows: Iterable[asyncpg.Record], count: int, limits: Sequence[int], convert) -> list[Page]:
    """Split rows tagged with their key's ordinal (1-based) into one Page per key.

    Each probe fetched `limit + 1` rows: the extra row only says a next page exists.
    """
    grouped: list[list] = [[] for _ in range(count)]
    for r in rows:
        grouped[r["ord"] - 1].append(convert(r))
    return [
        Page(rows=tuple(found[:limit]), has_next=len(found) > limit)
        for found, limit in zip(grouped, limits)
    ]


# --- tasks ---------------------------------------------------------------

# tasks_pkey
_TASKS_BY_ID = f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE t.task_id = ANY($1::text[])"


async def tasks_by_id(db: Database, task_ids: Sequence[str]) -> dict[str, Task]:
    """The tasks that exist among `task_ids`, by id."""
    return {r["task_id"]: _task(r) for r in await db.fetch(_TASKS_BY_ID, list(task_ids))}


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
SELECT k.ord, {_TASK_COLUMNS}
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
        found[r["ord"] - 1] = _task(r)
    return found


# tasks_label_created: a keyset probe per label, newest first.
_LABEL_HISTORY = f"""
SELECT k.ord, {_TASK_COLUMNS}
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
    return _pages(rows, len(keys), [limit for _, _, limit in keys], _task)


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
    columns=_TASK_COLUMNS, state="", before_all=_BEFORE_ALL, index="tasks_group")
_GROUP_PAGE_IN_STATE = _GROUP_PAGE.format(
    columns=_TASK_COLUMNS, state="AND t.state = k.state", before_all=_BEFORE_ALL,
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
    return _pages(rows, len(keys), [limit for *_, limit in keys], _task)


# task_dependencies_dependent, then tasks_pkey
_DEPENDENTS_PAGE = f"""
SELECT k.ord, {_TASK_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(task_id, after_id, lim, ord)
CROSS JOIN LATERAL (
    SELECT d.task_id FROM task_dependencies d
    WHERE d.dependency_id = k.task_id AND d.task_id > COALESCE(k.after_id, '{_BEFORE_ALL}')
    ORDER BY d.task_id
    LIMIT k.lim + 1
) d
JOIN tasks t ON t.task_id = d.task_id
ORDER BY k.ord, t.task_id"""


async def dependent_pages(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of each task's dependents by task id: keys are (task, after, limit)."""
    rows = await db.fetch(
        _DEPENDENTS_PAGE,
        [task_id for task_id, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return _pages(rows, len(keys), [limit for *_, limit in keys], _task)


# --- index ---------------------------------------------------------------

# index_entries_pkey: one probe per (namespace, name). The LIMIT keeps the
# subquery from being flattened into a join, which at thousands of keys the
# planner would answer by hashing the whole table.
_ENTRIES_BY_PATH = f"""
SELECT k.ord, {_ENTRY_COLUMNS}
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(namespace, name, ord)
CROSS JOIN LATERAL (
    SELECT * FROM index_entries e
    WHERE e.namespace = k.namespace AND e.name = k.name AND e.expires > now()
    LIMIT 1
) e"""


async def index_entries(db: Database, keys: Sequence[tuple[str, str]]) -> list[IndexEntry | None]:
    """The unexpired entry at each (namespace, name), or None."""
    found: list[IndexEntry | None] = [None] * len(keys)
    rows = await db.fetch(_ENTRIES_BY_PATH, [ns for ns, _ in keys], [name for _, name in keys])
    for r in rows:
        found[r["ord"] - 1] = _entry(r)
    return found


# index_namespaces_pkey: a probe per path (LIMIT: see _ENTRIES_BY_PATH).
_NAMESPACES = """
SELECT k.ord, n.expires
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(parent, name, ord)
CROSS JOIN LATERAL (
    SELECT n.expires FROM index_namespaces n
    WHERE n.parent = k.parent AND n.name = k.name AND n.expires > now()
    LIMIT 1
) n"""


async def namespaces(db: Database, paths: Sequence[str]) -> list[Namespace | None]:
    """The namespace at each path, or None; the root (`""`) always exists."""
    found: list[Namespace | None] = [
        Namespace(path="", expires=None) if path == "" else None for path in paths
    ]
    parts = [path.rpartition(".") for path in paths]
    rows = await db.fetch(_NAMESPACES, [p[0] for p in parts], [p[2] for p in parts])
    for r in rows:
        found[r["ord"] - 1] = Namespace(path=paths[r["ord"] - 1], expires=r["expires"])
    return found


# index_namespaces_pkey: children of a namespace, by name.
_CHILD_NAMESPACES = f"""
SELECT k.ord, CASE WHEN k.parent = '' THEN n.name ELSE k.parent || '.' || n.name END AS path,
       n.expires
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(parent, after_name, lim, ord)
CROSS JOIN LATERAL (
    SELECT n.name, n.expires FROM index_namespaces n
    WHERE n.parent = k.parent AND n.name > COALESCE(k.after_name, '{_BEFORE_ALL}')
      AND n.expires > now()
    ORDER BY n.name
    LIMIT k.lim + 1
) n"""


async def child_namespace_pages(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of each namespace's children: keys are (path, after name, limit)."""
    rows = await db.fetch(
        _CHILD_NAMESPACES,
        [path for path, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return _pages(rows, len(keys), [limit for *_, limit in keys],
                  lambda r: Namespace(path=r["path"], expires=r["expires"]))


# index_entries_pkey: the entries directly in a namespace, by name.
_NAMESPACE_ENTRIES = f"""
SELECT k.ord, {_ENTRY_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(namespace, after_name, lim, ord)
CROSS JOIN LATERAL (
    SELECT * FROM index_entries e
    WHERE e.namespace = k.namespace AND e.name > COALESCE(k.after_name, '{_BEFORE_ALL}')
      AND e.expires > now()
    ORDER BY e.name
    LIMIT k.lim + 1
) e"""


async def namespace_entry_pages(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of the entries in each namespace: keys are (path, after name, limit)."""
    rows = await db.fetch(
        _NAMESPACE_ENTRIES,
        [path for path, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return _pages(rows, len(keys), [limit for *_, limit in keys], _entry)
