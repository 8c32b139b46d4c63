"""Which of two writes of one key is kept: a task's statuses, the index entries at a path.

Each rule is defined once, here. Python applies it where two rows meet before
they are written (a batch, ingest/batches.py and ingest/mirror.py); the write
statements of store/writes.py embed the SQL condition built here, next to the
Python, from the same terms. tests/test_precedence.py runs every pair of a
generated set through both and checks that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tcgraph.model import IndexEntryRow, State

# How far a run has got: with the number of runs, this orders two statuses of
# one task, so that an older dump or a late message never rolls a task back.
_RUN_PROGRESS = {State.PENDING: 1, State.RUNNING: 2, State.COMPLETED: 3, State.FAILED: 3,
                 State.EXCEPTION: 3}


def status_rank(run_states: Sequence[str]) -> int:
    """The rank of a status whose runs are in `run_states` (oldest first).

    More runs rank higher; with as many runs, the last run's later state does
    (pending < running < resolved). Stored with the status (`status_rank`
    columns), where `status_replaces` compares it.
    """
    if not run_states:
        return 0
    return len(run_states) * 10 + _RUN_PROGRESS[State(run_states[-1])]


def status_replaces(new_rank: int, old_rank: int) -> bool:
    """Whether a status of rank `new_rank` replaces one of `old_rank`: unless it is
    lower, so that of two equal ones the later written wins."""
    return new_rank >= old_rank


def status_replaces_sql(new: str, old: str) -> str:
    """`status_replaces` as an SQL condition on rows `new` and `old` (table names or
    aliases) that have a `status_rank` column."""
    _check_names(new, old)
    return f"{new}.status_rank >= {old}.status_rank"


def entry_replaces(new: IndexEntryRow, old: IndexEntryRow, now: datetime) -> bool:
    """Whether index entry `new` replaces `old` at the same path, at time `now`.

    An expired entry gives way to any other. Otherwise the higher rank wins;
    on a tie the later completion, unless either completion time is unknown
    (then the newer write wins, as the index service's insertTask lets the
    latest call win); equal times go to the greater task id, so that the
    order of arrival never matters.
    """
    if old.expires <= now:
        return True
    if new.rank != old.rank:
        return new.rank > old.rank
    if new.resolved is None or old.resolved is None:
        return True
    return (new.resolved, new.task_id) >= (old.resolved, old.task_id)


def entry_replaces_sql(new: str, old: str) -> str:
    """`entry_replaces` as an SQL condition on index_entries rows `new` and `old`, at
    the transaction's `now()`. Task ids compare as Python compares them (code
    points: COLLATE "C"), whatever the database's collation."""
    _check_names(new, old)
    return (f"({old}.expires <= now()"
            f" OR {new}.rank > {old}.rank"
            f" OR ({new}.rank = {old}.rank"
            f" AND ({new}.resolved IS NULL OR {old}.resolved IS NULL"
            f" OR ({new}.resolved, {new}.task_id COLLATE \"C\")"
            f" >= ({old}.resolved, {old}.task_id COLLATE \"C\"))))")


def _check_names(*names: str) -> None:
    # Only the write statements' own table names and aliases go into the SQL.
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not an SQL name")
