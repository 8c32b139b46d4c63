"""store.failures: real PostgreSQL errors told apart, an outage from rows refused."""

from __future__ import annotations

import asyncpg

from tcgraph.store import failures


async def _error(conn: asyncpg.Connection, *statements: str) -> BaseException:
    try:
        for sql in statements:
            await conn.execute(sql)
    except Exception as e:
        return e
    raise AssertionError(f"{statements} did not fail")


async def test_an_outage_is_told_apart_from_rows_the_store_refuses(
        database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        refused = [
            await _error(conn, "SELECT 1 / 0"),  # 22012
            await _error(conn, "SELECT 'x'::int"),  # 22P02
            # 54000: an index row over PostgreSQL's limit, as a long label gives.
            await _error(conn, "CREATE TEMP TABLE big (t text PRIMARY KEY)",
                         "INSERT INTO big SELECT string_agg(md5(i::text), '') "
                         "FROM generate_series(1, 200) i"),
        ]
        away = [
            await _error(conn, "SET statement_timeout = 1", "SELECT pg_sleep(5)"),  # 57014
            await _error(conn, "RESET statement_timeout", "BEGIN READ ONLY",
                         "INSERT INTO mirror_rejected (exchange, routing_key, problem, body) "
                         "VALUES ('', '', '', '')"),  # 25006
        ]
        await conn.execute("ROLLBACK")
        away.append(await _error(conn, "SELECT * FROM no_such_table"))  # 42P01: not migrated
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await other.execute("SELECT pg_terminate_backend($1)", pid)
        away.append(await _error(conn, "SELECT 1"))  # 57P01, or the connection gone
    finally:
        await conn.close()
        await other.close()
    assert [getattr(e, "sqlstate", None) for e in refused] == ["22012", "22P02", "54000"]
    assert not any(failures.outage(e) for e in refused), refused
    assert all(failures.outage(e) for e in away), away
    assert failures.refusal(refused[2]).startswith(
        "ProgramLimitExceededError (SQLSTATE 54000): index row")
