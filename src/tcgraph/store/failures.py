"""What a failed write means: the database away (try again later), or the rows refused.

The follower sets aside the messages whose rows PostgreSQL refuses and retries
a batch only for an outage; `tcgraph import` reports a refused file as bad
input, an outage as an interrupted import. Both ask `outage`.
"""

from __future__ import annotations

import asyncpg

from tcgraph.store.pool import CONNECTION_ERRORS

# SQLSTATE classes of a database that is away, overloaded or shutting down,
# whatever was being written: 08 connection exception, 40 transaction rollback
# (a deadlock or serialization conflict that outlived in_transaction's
# attempts), 53 insufficient resources, 57 operator intervention (shutdown,
# cancel, statement timeout), 58 system error (I/O); 42, a table, column or
# privilege the statements need is missing (a deployment fault an operator
# mends: rows cannot cause it, as every value is a parameter); and two codes:
# a hot standby or read-only database (25006), a lock not granted in time (55P03).
_OUTAGE_CLASSES = ("08", "40", "42", "53", "57", "58")
_OUTAGE_CODES = ("25006", "55P03")


def outage(error: BaseException) -> bool:
    """Whether `error` is the database being away, overloaded, shutting down or
    missing what the statements need (trying again later may work), rather than
    refusing what was written.

    Any other error, whatever its SQLSTATE class (a value out of range, an index
    row over PostgreSQL's size limit, ...), comes from the rows written and
    comes back every time they are written: the writer sets them aside. The
    errors the first one arose from count too (a lost connection fails the
    statement, then the rollback).
    """
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and not any(current is e for e in seen):
        seen.append(current)
        if isinstance(current, asyncpg.PostgresError):
            state = str(current.sqlstate or "")
            if state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_CODES:
                return True
        elif isinstance(current, (*CONNECTION_ERRORS, asyncpg.InternalClientError)):
            return True  # OSError includes TimeoutError
        current = current.__cause__ or current.__context__
    return False


def refusal(error: BaseException) -> str:
    """What the store said when it refused rows: the type, SQLSTATE and text of the
    PostgreSQL error `error` is or arose from (else of `error` itself)."""
    current: BaseException | None = error
    while current is not None and not isinstance(current, asyncpg.PostgresError):
        current = current.__cause__ or current.__context__
    said = current if current is not None else error
    state = getattr(said, "sqlstate", None)
    code = f" (SQLSTATE {state})" if isinstance(said, asyncpg.PostgresError) and state else ""
    return f"{type(said).__name__}{code}: {said}"
