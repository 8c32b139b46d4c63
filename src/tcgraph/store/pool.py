"""The asyncpg pool, its codecs and limits, and the per-request SQL counters."""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import asyncpg
import orjson

from tcgraph.config import Settings
from tcgraph.errors import BadInput, DatabaseUnavailable, StatementTimeout

log = logging.getLogger(__name__)


# Every execution gets a plan for its own parameters. asyncpg prepares each
# statement, and after five executions PostgreSQL may switch to a generic plan,
# which cannot drop a filter left unset ($4 IS NULL OR ...): for `latest` it read
# every task of each label and sorted them instead of probing tasks_label_created
# for the newest (python -m bench --scale, 2 million tasks: 20 s instead of 0.3 s
# for 5,000 labels; docs/scaling.md). Planning again costs about 0.2 ms a
# statement, and tcgraph runs a few per request. Set when a connection opens and
# again after each release's RESET ALL.
_CUSTOM_PLANS = "SET plan_cache_mode = force_custom_plan;"


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    def get_reset_query(self) -> str:
        return str(super().get_reset_query()) + _CUSTOM_PLANS


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_CUSTOM_PLANS)
    # jsonb columns that the API looks inside (runs) are decoded with orjson;
    # documents passed through whole are selected as ::text and never decoded.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: v if isinstance(v, str) else orjson.dumps(v).decode(),
        decoder=orjson.loads,
    )


async def open_pool(url: str, settings: Settings, *, tolerate_outage: bool = False) -> asyncpg.Pool:
    """A pool whose every connection carries the statement timeout.

    With `tolerate_outage`, a database that cannot be reached now still gives
    a pool (with no warm connections): the server starts, answers 503 while
    the database is away, and connects on its own once it is back.
    """

    async def create(min_size: int) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=settings.pool_max_size,
            init=_init_connection,
            connection_class=_Connection,
            # 0 behind a transaction-pooling pgbouncer before 1.21, which
            # cannot keep a named prepared statement on one server connection.
            statement_cache_size=settings.statement_cache_size,
            server_settings={
                "application_name": "tcgraph",
                "statement_timeout": str(settings.statement_timeout_ms),
            },
        )
        assert pool is not None
        return pool

    try:
        return await create(settings.pool_min_size)
    except _CONNECTION_ERRORS:
        if not tolerate_outage:
            raise
        log.warning("the database is unavailable; serving 503 until it is back")
        return await create(0)


# What a lost or refused connection looks like from asyncpg: the socket's own
# errors, PostgreSQL refusing connections (starting up, shutting down, too
# many clients), and a connection that closed under a running statement.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
)


@dataclass(frozen=True)
class PoolFigures:
    """How busy a pool is at one moment (what /metrics reports as tcgraph_pool_*)."""

    size: int  # open connections
    in_use: int  # connections handed out (running a statement)
    waiting: int  # statements waiting for a free connection


# Statements waiting for a connection, by pool. asyncpg counts its open and
# idle connections (get_size, get_idle_size) but not its waiters. An entry
# exists only while something waits, so a closed pool leaves nothing behind.
_waiting: collections.Counter[int] = collections.Counter()


def pool_figures(pool: asyncpg.Pool) -> PoolFigures:
    """`pool`'s figures now: read when they are reported, never kept up to date."""
    size = pool.get_size()
    return PoolFigures(size=size, in_use=size - pool.get_idle_size(), waiting=_waiting[id(pool)])


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

    def __init__(self, pool: asyncpg.Pool, stats: SqlStats | None = None,
                 acquire_timeout: float = 5.0) -> None:
        self.pool = pool
        self.stats = stats if stats is not None else SqlStats()
        self.acquire_timeout = acquire_timeout

    async def fetch(self, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        """Run one statement on a pooled connection and return its rows.

        Raises DatabaseUnavailable when no connection can be had within the
        acquire timeout or the connection is lost, and StatementTimeout when
        PostgreSQL cancels the statement: both mean "try again later", never
        a wrong answer.
        """
        started = time.perf_counter()
        try:
            _waiting[id(self.pool)] += 1
            try:
                conn = await self.pool.acquire(timeout=self.acquire_timeout)
            except TimeoutError:
                raise DatabaseUnavailable(
                    f"no database connection became free within {self.acquire_timeout:g} s"
                ) from None
            except (asyncpg.PostgresError, *_CONNECTION_ERRORS) as e:
                # Whatever stops us connecting (refused, shutting down, the
                # database closed to connections) is an outage to the client.
                log.warning("cannot connect to the database: %s: %s", type(e).__name__, e)
                raise DatabaseUnavailable("the database is unavailable") from None
            finally:
                _waiting[id(self.pool)] -= 1
                if not _waiting[id(self.pool)]:
                    del _waiting[id(self.pool)]
            try:
                rows: Sequence[asyncpg.Record] = await conn.fetch(sql, *args)
            except (asyncpg.CharacterNotInRepertoireError,
                    asyncpg.UntranslatableCharacterError) as e:
                # A key with U+0000 (or another character PostgreSQL cannot
                # store) can match nothing; say so instead of failing.
                raise BadInput(f"a key holds a character PostgreSQL cannot compare: {e}") from None
            except asyncpg.QueryCanceledError:
                raise StatementTimeout(
                    "the database cancelled a statement that ran too long") from None
            except (*_CONNECTION_ERRORS, asyncpg.InternalClientError) as e:
                # The protocol state of a connection that broke mid-statement
                # cannot be trusted: close it so the pool opens a new one.
                log.warning("lost the database connection: %s: %s", type(e).__name__, e)
                # asyncpg may already have handed a lost connection back to
                # the pool; then there is nothing left for us to close.
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                raise DatabaseUnavailable("the database is unavailable") from None
            finally:
                await self.pool.release(conn)
        finally:
            self.stats.statements += 1
            self.stats.ms += (time.perf_counter() - started) * 1000
        self.stats.rows += len(rows)
        return rows

# For callers outside the store that tell a database fault from their own errors.
CONNECTION_ERRORS = _CONNECTION_ERRORS
