"""Reads of the `index_namespaces` table: namespaces by path, children of a namespace."""

from __future__ import annotations

from collections.abc import Sequence

from tcgraph.model import Namespace, Page
from tcgraph.store.pool import Database
from tcgraph.store.queries.pages import BEFORE_ALL, en_us_after, en_us_order, split_pages

# index_namespaces_pkey: a probe per path (LIMIT: see index_entries._ENTRIES_BY_PATH).
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
    WHERE n.parent = k.parent AND n.name > COALESCE(k.after_name, '{BEFORE_ALL}')
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
    return split_pages(rows, len(keys), [limit for *_, limit in keys],
                  lambda r: Namespace(path=r["path"], expires=r["expires"]))


# index_namespaces_en_us: children of a namespace in Taskcluster's listNamespaces order.
_CHILD_NAMESPACES_EN_US = f"""
SELECT k.ord, CASE WHEN k.parent = '' THEN n.name ELSE k.parent || '.' || n.name END AS path,
       n.expires
FROM unnest($1::text[], $2::text[], $3::int[]) WITH ORDINALITY AS k(parent, after_name, lim, ord)
CROSS JOIN LATERAL (
    SELECT n.name, n.expires FROM index_namespaces n
    WHERE n.parent = k.parent AND {en_us_after("n.name", "k.after_name")}
      AND n.expires > now()
    ORDER BY {en_us_order("n.name")}
    LIMIT k.lim + 1
) n"""


async def child_namespace_pages_en_us(
    db: Database, keys: Sequence[tuple[str, str | None, int]]
) -> list[Page]:
    """One page of each namespace's children in Taskcluster's order: (path, after, limit)."""
    rows = await db.fetch(
        _CHILD_NAMESPACES_EN_US,
        [path for path, _, _ in keys],
        [after for _, after, _ in keys],
        [limit for _, _, limit in keys],
    )
    return split_pages(rows, len(keys), [limit for *_, limit in keys],
                       lambda r: Namespace(path=r["path"], expires=r["expires"]))
