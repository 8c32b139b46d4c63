"""What every resolver of one request shares: settings, counters, loaders."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from tcgraph import metrics
from tcgraph.config import Settings
from tcgraph.loaders import Loaders
from tcgraph.store.pool import Database, SqlStats
from tcgraph.store.sqlfrag import SqlFragment


@dataclass
class Context:
    """Built once per request (GraphQL or REST), inside the running event loop."""

    settings: Settings
    db: Database
    loaders: Loaders
    request: Any = None
    response: Any = None
    # Compiled selections of this request (api/sqljson.py), by response path.
    plans: dict[tuple[str, ...], SqlFragment | None] = field(default_factory=dict)

    @classmethod
    def create(cls, pool: asyncpg.Pool, settings: Settings, **extra: Any) -> Context:
        stats = SqlStats()
        metrics.track_sql(stats)
        db = Database(pool, stats, acquire_timeout=settings.pool_timeout_ms / 1000)
        return cls(settings=settings, db=db, loaders=Loaders(db, settings.batch_size), **extra)

    def for_operation(self) -> Context:
        """A context of its own for one operation of a WebSocket connection: its own
        compiled selections; its loaders are replaced with fresh ones for each event
        (api/subscriptions/), so the connection's are only a starting point."""
        return replace(self, plans={})
