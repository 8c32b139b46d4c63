"""Reads of the `task_dependencies` table: one page of each task's dependents."""

from __future__ import annotations

from collections.abc import Sequence

from tcgraph.model import Page
from tcgraph.store.pool import Database
from tcgraph.store.queries.pages import BEFORE_ALL, en_us_after, en_us_order, split_pages
from tcgraph.store.queries.tasks import TASK_COLUMNS, json_node, json_node_columns, task_row
from tcgraph.store.sqlfrag import SqlFragment, Template

# task_dependencies_dependent, then tasks_pkey
_DEPENDENTS_PAGE_OF = """
SELECT k.ord, {columns}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(task_id, after_id, lim, ord)
CROSS JOIN LATERAL (
    SELECT d.task_id FROM task_dependencies d
    WHERE d.dependency_id = k.task_id AND d.task_id > COALESCE(k.after_id, '{before_all}')
    ORDER BY d.task_id
    LIMIT k.lim + 1
) d
JOIN tasks t ON t.task_id = d.task_id
ORDER BY k.ord, t.task_id"""
_DEPENDENTS_PAGE = _DEPENDENTS_PAGE_OF.format(columns=TASK_COLUMNS, before_all=BEFORE_ALL)
_DEPENDENTS_JSON_PAGE = Template(_DEPENDENTS_PAGE_OF.format(columns="{columns}",
                                                            before_all=BEFORE_ALL))


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
    return split_pages(rows, len(keys), [limit for *_, limit in keys], task_row)


# task_dependencies_dependent_en_us, then tasks_pkey: Taskcluster's listDependentTasks order.
_DEPENDENTS_PAGE_EN_US = f"""
SELECT k.ord, {TASK_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(task_id, after_id, lim, ord)
CROSS JOIN LATERAL (
    SELECT d.task_id FROM task_dependencies d
    WHERE d.dependency_id = k.task_id AND {en_us_after("d.task_id", "k.after_id")}
    ORDER BY {en_us_order("d.task_id")}
    LIMIT k.lim + 1
) d
JOIN tasks t ON t.task_id = d.task_id
ORDER BY k.ord, {en_us_order("t.task_id")}"""


async def dependent_pages_en_us(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of each task's dependents in Taskcluster's order: keys are (task, after, limit)."""
    rows = await db.fetch(
        _DEPENDENTS_PAGE_EN_US,
        [task_id for task_id, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys], task_row)


async def dependent_json_pages(
    db: Database, shape: SqlFragment, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """As dependent_pages, each row a JsonNode of `shape` over the task `t`."""
    rows = await db.fetch(
        _DEPENDENTS_JSON_PAGE(columns=json_node_columns(shape)).render(),
        [task_id for task_id, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys], json_node)
