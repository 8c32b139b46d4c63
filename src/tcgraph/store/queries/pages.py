"""Splitting one keyset-paginated statement's rows into a page per key."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable, Sequence

import asyncpg

from tcgraph.model import Page

# Sorts below every real key, so `key > COALESCE(after, '')` is an index
# condition on the first page as well as on later ones.
BEFORE_ALL = ""


def split_pages(
    rows: Iterable[asyncpg.Record], count: int, limits: Sequence[int],
    convert: Callable[[asyncpg.Record], Any],
) -> list[Page]:
    """Split rows tagged with their key's ordinal (1-based) into one Page per key.

    Each probe fetched `limit + 1` rows: the extra row only says a next page exists.
    """
    grouped: list[list[Any]] = [[] for _ in range(count)]
    for r in rows:
        grouped[r["ord"] - 1].append(convert(r))
    return [
        Page(rows=tuple(found[:limit]), has_next=len(found) > limit)
        for found, limit in zip(grouped, limits, strict=False)
    ]


def en_us_order(column: str) -> str:
    """ORDER BY terms for Taskcluster's list order of `column` (migration 0004's key).

    The column itself breaks ties between texts whose keys are equal, so that a
    keyset position is always exact.
    """
    return f'en_us_sort_key({column}) COLLATE "C", {column}'


def en_us_after(column: str, after: str) -> str:
    """The keyset condition "`column` comes after `after`" (NULL: from the start) in that order.

    The empty text sorts before every id and name, and keeps the condition an index
    condition on the first page as well.
    """
    start = f"COALESCE({after}, '{BEFORE_ALL}')"
    return f"({en_us_order(column)}) > ({en_us_order(start)})"
