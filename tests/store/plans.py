"""What PostgreSQL plans for the statements a store query runs: which indexes it reads.

`Recording` is the store's own Database, keeping each statement it runs with its
arguments; `plan` EXPLAINs one with sequential scans switched off, so that the plan
shows whether the index the query names next to its SQL can answer it at all, whatever
the (small) test tables' statistics would make the planner prefer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tcgraph.model import Page
from tcgraph.store.pool import Database

# A query answering one page per (key, after, limit).
PageQuery = Callable[[Database, Sequence[tuple[str, str | None, int]]], Awaitable[list[Page]]]


@dataclass(frozen=True)
class Statement:
    sql: str
    args: tuple[Any, ...]


class Recording(Database):
    """A Database that keeps every statement it runs, in order."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.statements: list[Statement] = []

    async def fetch(self, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        self.statements.append(Statement(sql, args))
        return await super().fetch(sql, *args)

    @property
    def only(self) -> Statement:
        """The one statement run (a query that ran more or fewer is a failure)."""
        assert len(self.statements) == 1, self.statements
        return self.statements[0]


@dataclass
class Plan:
    indexes: set[str] = field(default_factory=set)  # every index a node reads
    seq_scans: set[str] = field(default_factory=set)  # tables read whole
    text: str = ""


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


async def plan(pool: asyncpg.Pool, statement: Statement) -> Plan:
    """The plan of `statement` with its own arguments, sequential scans off."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement.sql}", *statement.args)
    tree = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    found = Plan(text=json.dumps(tree, indent=1))
    for node in _nodes(tree):
        if "Index Name" in node:
            found.indexes.add(node["Index Name"])
        if node["Node Type"] == "Seq Scan":
            found.seq_scans.add(node["Relation Name"])
    return found


async def assert_uses(pool: asyncpg.Pool, statement: Statement, *indexes: str) -> Plan:
    """`statement` reads each of `indexes` and reads no table whole."""
    found = await plan(pool, statement)
    assert set(indexes) <= found.indexes, found.text
    assert not found.seq_scans, found.text
    return found


async def assert_uses_one_of(pool: asyncpg.Pool, statement: Statement, *indexes: str) -> Plan:
    """`statement` reads one of `indexes` (any fits it equally) and reads no table whole."""
    found = await plan(pool, statement)
    assert set(indexes) & found.indexes, found.text
    assert not found.seq_scans, found.text
    return found
