"""Reads of the `index_entries` table: entries by path and by namespace."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from tcgraph.model import IndexEntry, Page, split_index_path
from tcgraph.store.pool import Database
from tcgraph.store.queries.json_lists import KeyList, fetch_lists
from tcgraph.store.queries.pages import BEFORE_ALL, en_us_after, en_us_order, split_pages
from tcgraph.store.sqlfrag import SqlFragment, Template, raw

_ENTRY_COLUMNS = "e.namespace, e.name, e.task_id, e.rank, e.data::text AS data, e.expires"


def _entry(r: asyncpg.Record) -> IndexEntry:
    return IndexEntry(
        namespace=r["namespace"], name=r["name"], task_id=r["task_id"],
        rank=r["rank"], data=r["data"], expires=r["expires"],
    )


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


# index_entries_pkey: the entries directly in a namespace, by name.
_NAMESPACE_ENTRIES = f"""
SELECT k.ord, {_ENTRY_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(namespace, after_name, lim, ord)
CROSS JOIN LATERAL (
    SELECT * FROM index_entries e
    WHERE e.namespace = k.namespace AND e.name > COALESCE(k.after_name, '{BEFORE_ALL}')
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
    return split_pages(rows, len(keys), [limit for *_, limit in keys], _entry)


# index_entries_en_us: the entries in a namespace in Taskcluster's listTasks order.
_NAMESPACE_ENTRIES_EN_US = f"""
SELECT k.ord, {_ENTRY_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(namespace, after_name, lim, ord)
CROSS JOIN LATERAL (
    SELECT * FROM index_entries e
    WHERE e.namespace = k.namespace AND {en_us_after("e.name", "k.after_name")}
      AND e.expires > now()
    ORDER BY {en_us_order("e.name")}
    LIMIT k.lim + 1
) e"""


async def namespace_entry_pages_en_us(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of the entries in each namespace in Taskcluster's order: (path, after, limit)."""
    rows = await db.fetch(
        _NAMESPACE_ENTRIES_EN_US,
        [path for path, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys], _entry)


# index_entries_pkey: one probe per path (LIMIT: see _ENTRIES_BY_PATH); each
# entry row `e` also carries the path as it was asked for, `index_path`.
_ENTRIES_JSON = Template("""
SELECT k.list, {values}
FROM unnest($1::int[], $2::int[], $3::text[], $4::text[], $5::text[])
     WITH ORDINALITY AS k(list, shape, index_path, namespace, name, ord)
LEFT JOIN LATERAL (
    SELECT e.*, k.index_path FROM index_entries e
    WHERE e.namespace = k.namespace AND e.name = k.name AND e.expires > now()
    LIMIT 1
) e ON true
GROUP BY k.list""")


async def entries_json(db: Database, shapes: Sequence[SqlFragment],
                       path_lists: Sequence[tuple[Sequence[str], int]]) -> list[str]:
    """Per (paths, shape number), the JSON array of that shape over each entry `e` (null: none)."""
    lists: list[KeyList] = []
    for paths, shape in path_lists:
        split = [split_index_path(path) for path in paths]
        lists.append(KeyList([list(paths), [ns for ns, _ in split], [name for _, name in split]],
                             shape))
    return await fetch_lists(db, _ENTRIES_JSON, raw("e.task_id"), shapes, lists)
