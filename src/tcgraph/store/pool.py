"""The asyncpg pool, its codecs and limits, and the per-request SQL counters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import asyncpg
import orjson

from tcgraph.config import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns that the API looks inside (runs) are decoded with orjson;
    # documents passed through whole are selected as ::text and never decoded.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: v if isinstance(v, str) else orjson.dumps(v).decode(),
        decoder=orjson.loads,
    )


async def open_pool(url: str, settings: Settings) -> asyncpg.Pool:
    """A pool whose every connection carries the statement timeout."""
    pool = await asyncpg.create_pool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        init=_init_connection,
        server_settings={
            "application_name": "tcgraph",
            "statement_timeout": str(settings.statement_timeout_ms),
        },
    )
    assert pool is not None
    return pool


@dataclass
class SqlStats:
    """What one request cost the database: reported as `extensions.sql`."""

    statements: int = 0
    rows: int = 0
    ms: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"statements": self.statements, "rows": self.rows, "ms": round(self.ms, 3)}


class Database:
    """The pool as one request sees it: every statement it runs is counted."""

    def __init__(self, pool: asyncpg.Pool, stats: SqlStats | None = None) -> None:
        self.pool = pool
        self.stats = stats if stats is not None else SqlStats()

    async def fetch(self, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        """Run one statement on a pooled connection and return its rows."""
        started = time.perf_counter()
        try:
            rows = await self.pool.fetch(sql, *args)
        finally:
            self.stats.statements += 1
            self.stats.ms += (time.perf_counter() - started) * 1000
        self.stats.rows += len(rows)
        return rows
