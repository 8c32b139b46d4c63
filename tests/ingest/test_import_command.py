"""`tcgraph import` as an operator runs it: per-file outcomes, database faults, and two
imports of the same tasks at once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from ingest.dumps import LONG_LABEL, definition, entry, run, status, tid, write, write_lines
from services.postgres import connected
from waiting import eventually_async

TIMEOUT_S = 120


def tcgraph(*args: str, stop_at: str = "") -> subprocess.Popen[str]:
    env = {**os.environ, "TCGRAPH_TEST_STOP_AT": stop_at}
    return subprocess.Popen([sys.executable, "-m", "tcgraph", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, stderr


async def stopped(process: subprocess.Popen[str]) -> None:
    """Wait until `process` stops itself at a checkpoint (ingest/checkpoints.py)."""
    result = await asyncio.wait_for(asyncio.to_thread(
        os.waitid, os.P_PID, process.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT), TIMEOUT_S)
    assert result is not None  # None only with WNOHANG
    assert result.si_code == os.CLD_STOPPED, process.communicate(timeout=TIMEOUT_S)


TASKS = 3000


def group_lines(path: Path, numbers: range) -> str:
    """JSON Lines of {taskId, task, status} for the tasks `numbers`, in that order."""
    with open(path, "wb") as out:
        for n in numbers:
            out.write(orjson.dumps({"taskId": tid(n), "task": definition(),
                                    "status": status(tid(n), [run(0)])}) + b"\n")
    return str(path)


def entries_file(path: Path, name: str) -> str:
    return write(path, entry(f"cli.{name}", tid(1)))


async def test_each_file_says_what_happened_and_the_rest_waits(
        database_url: str, tmp_path: Path) -> None:
    a, c = entries_file(tmp_path / "a.json", "a"), entries_file(tmp_path / "c.json", "c")
    bad = tmp_path / "bad.json"
    bad.write_text('{"namespace": "cli.bad", "taskId": "nope"}')
    code, stderr = finish(tcgraph("import", "--database-url", database_url, a, str(bad), c))
    assert code == 1
    lines = stderr.strip().splitlines()[-3:]
    assert lines[0] == f"tcgraph import: {a}: committed: 0 tasks, 0 statuses, 1 index entries"
    assert lines[1].startswith(f"tcgraph import: {bad}: taskId: 'nope' is not a slugid")
    assert lines[1].endswith("(nothing from this file was written)")
    assert lines[2].startswith(f"tcgraph import: {c}: not attempted")
    assert "Traceback" not in stderr

    code, stderr = finish(tcgraph("import", "--database-url", database_url, "--keep-going",
                                  str(bad), c))
    assert code == 1 and f"{c}: committed" in stderr and "Traceback" not in stderr
    async with connected(database_url) as conn:
        assert {r["name"] for r in await conn.fetch("SELECT name FROM index_entries")} == {
            "a", "c"}


async def test_a_row_postgresql_refuses_is_reported_as_bad_input_and_the_rest_imported(
        database_url: str, tmp_path: Path) -> None:
    # Its first batch holds the long label among others: the row at fault is found.
    long = write_lines(tmp_path / "long.jsonl", [
        {"taskId": tid(n), "task": definition(
            tags={"kind": "build", "label": LONG_LABEL if n == 1 else f"t{n}"}),
         "status": status(tid(n), [run(0)])} for n in range(3)])
    good = entries_file(tmp_path / "good.json", "good")
    code, stderr = finish(tcgraph("import", "--database-url", database_url, "--keep-going",
                                  long, good))
    assert code == 1 and "Traceback" not in stderr, stderr
    refused, committed = stderr.strip().splitlines()[-2:]
    # Said to be what the file holds (importing it again fails again), not an outage,
    # and where it is.
    assert refused.startswith(f"tcgraph import: {long}: line 2, task: PostgreSQL refused it: "
                              "ProgramLimitExceededError (SQLSTATE 54000): "), refused
    assert "index row" in refused
    assert refused.endswith("(nothing from this file was written)")
    assert committed.startswith(f"tcgraph import: {good}: committed")
    async with connected(database_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 0
        assert await conn.fetchval("SELECT count(*) FROM index_entries") == 1


async def test_a_database_lost_mid_import_is_reported_for_the_file(
        database_url: str, tmp_path: Path) -> None:
    path = group_lines(tmp_path / "group.jsonl", range(1500))
    async with connected(database_url) as conn:
        process = tcgraph("import", "--database-url", database_url, path,
                          stop_at="batch-written#1")
        await stopped(process)
        # The server ends the importer's session, as a shutdown or a crash would.
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'tcgraph'")
        assert killed == 1
        process.send_signal(signal.SIGCONT)
        code, stderr = finish(process)
        assert code == 1 and "Traceback" not in stderr, stderr
        # Which depends on whether the server's goodbye was read before the socket
        # closed; each names the cause, never asyncpg's failed rollback after it.
        assert re.search(re.escape(f"tcgraph import: {path}: database: ")
                         + r"(AdminShutdownError \(57P01\)|ConnectionDoesNotExistError \(08003\)"
                         r"|the connection to PostgreSQL was lost)", stderr), stderr
        assert stderr.rstrip().endswith("(nothing from this file was written)"), stderr
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 0


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    code, stderr = finish(tcgraph("import", "--database-url",
                                  "postgresql://postgres@127.0.0.1:1/postgres",
                                  entries_file(tmp_path / "a.json", "a")))
    assert code == 1 and "cannot reach the database" in stderr and "Traceback" not in stderr


async def test_two_imports_of_the_same_tasks_in_opposite_orders_both_succeed(
        database_url: str, tmp_path: Path) -> None:
    """Each holds the locks of its first batch, then needs the other's: PostgreSQL
    aborts one of them to break the deadlock, and that one runs again."""
    forward = group_lines(tmp_path / "forward.jsonl", range(TASKS))
    backward = group_lines(tmp_path / "backward.jsonl", range(TASKS - 1, -1, -1))
    async with connected(database_url) as conn:
        first = tcgraph("import", "--database-url", database_url, forward,
                        stop_at="batch-written#1")
        await stopped(first)  # holds tasks 0-999
        second = tcgraph("import", "--database-url", database_url, backward,
                         stop_at="batch-written#1")
        await stopped(second)  # holds tasks 2000-2999
        first.send_signal(signal.SIGCONT)
        # The first writes 1000-1999, then waits for the second's 2000-2999.
        await eventually_async(lambda: conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE "
            "application_name = 'tcgraph' AND wait_event_type = 'Lock')"),
            what="the first import to wait on the second's locks", timeout=TIMEOUT_S)
        second.send_signal(signal.SIGCONT)  # it needs 1000-1999: a deadlock
        results = [finish(first), finish(second)]
        assert [code for code, _ in results] == [0, 0], results
        # The deadlock happened, and was retried rather than reported.
        assert "write transaction aborted (DeadlockDetectedError)" in (
            results[0][1] + results[1][1]), results
        assert all("committed: 3000 tasks" in stderr for _, stderr in results), results
        assert await conn.fetchval("SELECT count(*) FROM tasks") == TASKS
        assert await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE state = 'completed'") == TASKS
