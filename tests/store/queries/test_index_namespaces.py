"""store/queries/index_namespaces.py: probes of index_namespaces_pkey, children by page."""

from __future__ import annotations

import asyncpg
import pytest

from factories import FAR, FakeTask, store
from store.plans import PageQuery, Recording, assert_uses
from tcgraph.store.queries import index_namespaces as namespaces

CHILDREN = ["x", "y", "z"]


@pytest.fixture
async def stored(pool: asyncpg.Pool) -> None:
    task = FakeTask()
    await store(pool, [task], entries=[(f"top.{child}.leaf", task.task_id, 0.0, FAR)
                                       for child in CHILDREN])


async def test_namespaces_by_path_probe_the_primary_key(pool: asyncpg.Pool, stored: None) -> None:
    db = Recording(pool)
    found = await namespaces.namespaces(db, ["top.y", "top.none", ""])
    await assert_uses(pool, db.only, "index_namespaces_pkey")
    assert [n.path if n else None for n in found] == ["top.y", None, ""]
    assert found[0] is not None and found[0].expires is not None


@pytest.mark.parametrize("query, index", [
    (namespaces.child_namespace_pages, "index_namespaces_pkey"),
    (namespaces.child_namespace_pages_en_us, "index_namespaces_en_us"),
])
async def test_children_pages_read_their_index_and_end_exactly(
        pool: asyncpg.Pool, stored: None, query: PageQuery, index: str) -> None:
    db = Recording(pool)
    first, whole, root = await query(db, [("top", None, 2), ("top", None, 3), ("", None, 10)])
    await assert_uses(pool, db.only, index)
    assert [n.path for n in first.rows] == ["top.x", "top.y"] and first.has_next
    assert [n.path for n in whole.rows] == ["top.x", "top.y", "top.z"] and not whole.has_next
    assert [n.path for n in root.rows] == ["top"]
    (rest,) = await query(Recording(pool), [("top", "y", 2)])
    assert [n.path for n in rest.rows] == ["top.z"] and not rest.has_next
