"""store/queries/task_dependencies.py: a task's dependents by page, through their indexes."""

from __future__ import annotations

import asyncpg
import pytest

from factories import FakeTask, store
from store.plans import PageQuery, Recording, assert_uses
from tcgraph.store.queries import task_dependencies as dependencies


@pytest.fixture
async def family(pool: asyncpg.Pool) -> tuple[FakeTask, list[str]]:
    parent = FakeTask()
    children = [FakeTask(dependencies=[parent.task_id]) for _ in range(3)]
    await store(pool, [parent, *children])
    return parent, sorted(c.task_id for c in children)


@pytest.mark.parametrize("query, index", [
    (dependencies.dependent_pages, "task_dependencies_dependent"),
    (dependencies.dependent_pages_en_us, "task_dependencies_dependent_en_us"),
])
async def test_dependents_read_their_index_then_the_tasks_primary_key(
        pool: asyncpg.Pool, family: tuple[FakeTask, list[str]], query: PageQuery,
        index: str) -> None:
    parent, children = family
    db = Recording(pool)
    first, whole, none = await query(db, [(parent.task_id, None, 2), (parent.task_id, None, 3),
                                          (children[0], None, 5)])
    await assert_uses(pool, db.only, index, "tasks_pkey")
    assert len(first.rows) == 2 and first.has_next
    assert len(whole.rows) == 3 and not whole.has_next  # exactly the limit
    assert none.rows == () and not none.has_next
    got = {t.task_id for t in whole.rows}
    assert got == set(children)
    (rest,) = await query(Recording(pool), [(parent.task_id, first.rows[-1].task_id, 5)])
    assert {t.task_id for t in first.rows + rest.rows} == got and not rest.has_next
