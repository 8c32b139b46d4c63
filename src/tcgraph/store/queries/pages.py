"""Splitting one keyset-paginated statement's rows into a page per key."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

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
        for found, limit in zip(grouped, limits)
    ]
