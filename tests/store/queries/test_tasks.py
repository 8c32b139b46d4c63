"""store/queries/tasks.py against PostgreSQL: the index each statement names, and its pages."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from factories import BASE, FakeTask, store
from store.plans import Recording, assert_uses, assert_uses_one_of
from tcgraph.model import State, TaskFilter
from tcgraph.store.queries import tasks

GROUP = "group-queries"
NO_FILTER = TaskFilter()


@pytest.fixture
async def stored(pool: asyncpg.Pool) -> list[FakeTask]:
    """Five tasks of one label and group, a minute apart; the middle one failed."""
    made = [FakeTask(label="build", task_group_id=GROUP, created=BASE + timedelta(minutes=n),
                     state="failed" if n == 2 else "completed") for n in range(5)]
    await store(pool, made)
    return made


async def test_by_id_reads_the_primary_key(pool: asyncpg.Pool, stored: list[FakeTask]) -> None:
    for query in (tasks.tasks_by_id, tasks.definitions_by_id):
        db = Recording(pool)
        found = await query(db, [stored[0].task_id, "nope"])
        assert list(found) == [stored[0].task_id]
        await assert_uses(pool, db.only, "tasks_pkey")


@pytest.mark.parametrize("outcome, index, expected", [
    ("latest", "tasks_label_created", 4),
    ("success", "tasks_label_completed", 4),
    ("failure", "tasks_label_failed", 2),
])
async def test_latest_by_label_reads_the_partial_index_of_its_outcome(
        pool: asyncpg.Pool, stored: list[FakeTask], outcome: str, index: str,
        expected: int) -> None:
    db = Recording(pool)
    found = await tasks.latest_by_label(db, ["build", "none"], NO_FILTER, outcome)
    assert [t.task_id if t else None for t in found] == [stored[expected].task_id, None]
    await assert_uses(pool, db.only, index)


async def test_label_history_pages_newest_first_with_exact_boundaries(
        pool: asyncpg.Pool, stored: list[FakeTask]) -> None:
    newest_first = [t.task_id for t in reversed(stored)]
    db = Recording(pool)
    first, whole, beyond = await tasks.label_history(
        db, [("build", None, 2), ("build", None, 5), ("build", None, 6)], NO_FILTER)
    await assert_uses(pool, db.only, "tasks_label_created")
    assert [t.task_id for t in first.rows] == newest_first[:2] and first.has_next
    # Exactly the limit left: no next page; one more than there is: none either.
    assert [t.task_id for t in whole.rows] == newest_first and not whole.has_next
    assert [t.task_id for t in beyond.rows] == newest_first and not beyond.has_next
    last = first.rows[-1]
    after = (last.created, last.task_id)
    (rest,) = await tasks.label_history(Recording(pool), [("build", after, 3)], NO_FILTER)
    assert [t.task_id for t in rest.rows] == newest_first[2:] and not rest.has_next


@pytest.mark.parametrize("state, index", [(None, "tasks_group"),
                                          (State.FAILED, "tasks_group_state")])
async def test_group_pages_read_the_group_index_that_fits(
        pool: asyncpg.Pool, stored: list[FakeTask], state: State | None, index: str) -> None:
    by_id = sorted(t.task_id for t in stored if state is None or t.state == state.value)
    db = Recording(pool)
    (page,) = await tasks.task_group_pages(db, [(GROUP, state, None, 1)])
    await assert_uses(pool, db.only, index)
    assert [t.task_id for t in page.rows] == by_id[:1]
    assert page.has_next == (len(by_id) > 1)
    (rest,) = await tasks.task_group_pages(Recording(pool), [(GROUP, state, by_id[0], 10)])
    assert [t.task_id for t in rest.rows] == by_id[1:] and not rest.has_next


async def test_group_pages_in_taskclusters_order_read_their_index(
        pool: asyncpg.Pool, stored: list[FakeTask]) -> None:
    db = Recording(pool)
    (page,) = await tasks.task_group_pages_en_us(db, [(GROUP, None, 4)])
    await assert_uses(pool, db.only, "tasks_group_en_us")
    assert len(page.rows) == 4 and page.has_next
    (rest,) = await tasks.task_group_pages_en_us(Recording(pool),
                                                 [(GROUP, page.rows[-1].task_id, 4)])
    assert len(rest.rows) == 1 and not rest.has_next
    assert {t.task_id for t in page.rows + rest.rows} == {t.task_id for t in stored}


async def test_groups_read_the_group_indexes(pool: asyncpg.Pool, stored: list[FakeTask]) -> None:
    db = Recording(pool)
    assert await tasks.task_groups_exist(db, [GROUP, "none"]) == {GROUP}
    # Any index led by the group id answers EXISTS; the SQL's comment names tasks_group,
    # and PostgreSQL may read the narrower tasks_group_created instead.
    await assert_uses_one_of(pool, db.only, "tasks_group", "tasks_group_created")
    db = Recording(pool)
    found = await tasks.task_groups(db, [GROUP, "none"])
    await assert_uses(pool, db.only, "tasks_group_created")
    # The queue's rule: the group expires an hour after its first task.
    assert list(found) == [GROUP]
    assert found[GROUP].expires == stored[0].created + timedelta(days=365, hours=1)
