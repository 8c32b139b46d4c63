"""store/queries/index_entries.py: probes of index_entries_pkey, pages at their boundaries."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from factories import FAR, FakeTask, store
from store.plans import PageQuery, Recording, assert_uses
from tcgraph.store.queries import index_entries as entries

PAST = datetime(2020, 1, 1, tzinfo=UTC)
NAMES = ["a", "b", "c"]


@pytest.fixture
async def stored(pool: asyncpg.Pool) -> FakeTask:
    task = FakeTask()
    await store(pool, [task], entries=[
        *[(f"proj.ns.{name}", task.task_id, 1.0, FAR) for name in NAMES],
        ("proj.ns.gone", task.task_id, 1.0, PAST)])
    return task


async def test_entries_by_path_probe_the_primary_key_and_hide_expired_ones(
        pool: asyncpg.Pool, stored: FakeTask) -> None:
    db = Recording(pool)
    found = await entries.index_entries(db, [("proj.ns", "b"), ("proj.ns", "gone"),
                                             ("proj.ns", "none")])
    await assert_uses(pool, db.only, "index_entries_pkey")
    assert [e.task_id if e else None for e in found] == [stored.task_id, None, None]


@pytest.mark.parametrize("query, index", [
    (entries.namespace_entry_pages, "index_entries_pkey"),
    (entries.namespace_entry_pages_en_us, "index_entries_en_us"),
])
async def test_namespace_pages_read_their_index_and_end_exactly(
        pool: asyncpg.Pool, stored: FakeTask, query: PageQuery, index: str) -> None:
    db = Recording(pool)
    first, whole = await query(db, [("proj.ns", None, 2), ("proj.ns", None, 3)])
    await assert_uses(pool, db.only, index)
    assert [e.name for e in first.rows] == NAMES[:2] and first.has_next
    assert [e.name for e in whole.rows] == NAMES and not whole.has_next  # exactly the limit
    (rest,) = await query(Recording(pool), [("proj.ns", first.rows[-1].name, 2)])
    assert [e.name for e in rest.rows] == NAMES[2:] and not rest.has_next
