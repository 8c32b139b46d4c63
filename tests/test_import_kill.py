"""An import is all or nothing, even when its process is SIGKILLed mid-write.

`tcgraph import` writes each file in one transaction. These tests run the real command
in a subprocess on a large JSON Lines file, have it stop itself at named points of the
write path (ingest/checkpoints.py: a transaction just opened, a batch written, everything
written but not committed, committed), kill it there, and check that the database never
holds part of the file: not after a kill, and not as a server sees it while the
import's transaction holds written rows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from servers import serving
from services.postgres import connected
from tcgraph.config import Settings
from tcgraph.demo import generate
from tcgraph.server import create_app
from waiting import eventually_async

KILL_TASKS = 20_000  # about 2-3 s of writing on a 2-core machine
READ_TASKS = 10_000  # ten task groups of 1,000: one GraphQL page each
IMPORT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Dump:
    path: Path
    task_ids: set[str]
    groups: dict[str, int]  # taskGroupId -> tasks in it
    index_paths: set[str]


def write_dump(path: Path, tasks: int) -> Dump:
    """The demo dataset as JSON Lines (listTaskGroup and index pages), and what it holds."""
    task_ids: set[str] = set()
    groups: dict[str, int] = {}
    index_paths: set[str] = set()
    with open(path, "wb") as out:
        for document in generate(tasks, seed=7):
            assert isinstance(document, dict)
            if "taskGroupId" in document:
                for element in document["tasks"]:
                    task_ids.add(element["status"]["taskId"])
                    group = element["task"]["taskGroupId"]
                    groups[group] = groups.get(group, 0) + 1
            else:
                index_paths.update(entry["namespace"] for entry in document["tasks"])
            out.write(orjson.dumps(document) + b"\n")
    return Dump(path, task_ids, groups, index_paths)


@pytest.fixture(scope="module")
def big_dump(tmp_path_factory: pytest.TempPathFactory) -> Dump:
    return write_dump(tmp_path_factory.mktemp("import-kill") / "dump.jsonl", KILL_TASKS)


@pytest.fixture(scope="module")
def read_dump(tmp_path_factory: pytest.TempPathFactory) -> Dump:
    return write_dump(tmp_path_factory.mktemp("import-read") / "dump.jsonl", READ_TASKS)


def start_import(url: str, dump: Path, log: Path, stop_at: str = "") -> subprocess.Popen[bytes]:
    """`tcgraph import` of `dump`, stopping itself at the checkpoints in `stop_at`."""
    env = {**os.environ, "TCGRAPH_TEST_STOP_AT": stop_at}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tcgraph", "import", "--database-url", url, str(dump)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)


async def stopped(process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until `process` has stopped itself at a checkpoint (fail if it exited)."""
    def wait() -> os.waitid_result | None:
        # WNOWAIT: an exited process stays for Popen to reap.
        return os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)

    result = await asyncio.wait_for(asyncio.to_thread(wait), IMPORT_TIMEOUT_S)
    assert result is not None and result.si_code == os.CLD_STOPPED, log.read_text()


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("tasks", "task_dependencies", "index_entries", "index_namespaces")}


async def snapshot(conn: asyncpg.Connection) -> dict[str, str]:
    """A digest of every stored row, to compare before and after a re-import."""
    return {
        "tasks": await conn.fetchval(
            "SELECT md5(string_agg(concat_ws('|', task_id, state, runs::text, definition::text,"
            " status_rank, retries_left, label, created), E'\\n' ORDER BY task_id)) FROM tasks"),
        "task_dependencies": await conn.fetchval(
            "SELECT md5(string_agg(task_id || '>' || dependency_id, ',' "
            "ORDER BY task_id, dependency_id)) FROM task_dependencies"),
        "index_entries": await conn.fetchval(
            "SELECT md5(string_agg(concat_ws('|', namespace, name, task_id, rank, data::text,"
            " expires), E'\\n' ORDER BY namespace, name)) FROM index_entries"),
        "index_namespaces": await conn.fetchval(
            "SELECT md5(string_agg(concat_ws('|', parent, name, expires), E'\\n' "
            "ORDER BY parent, name)) FROM index_namespaces"),
    }


async def importer_backends(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The sessions of a tcgraph process with a transaction that has written (has an xid)."""
    backends: list[asyncpg.Record] = await conn.fetch(
        "SELECT pid, backend_xid, left(query, 40) AS query FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'tcgraph' "
        "AND backend_xid IS NOT NULL")
    return backends


async def tcgraph_sessions(conn: asyncpg.Connection) -> int:
    sessions: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'tcgraph'")
    return sessions


@dataclass
class Kill:
    point: str
    writing_at_kill: bool = False
    counts: dict[str, int] | None = None


# Where to kill, and whether the file must then be there in full.
KILL_POINTS = [
    ("transaction-open", False),
    ("batch-written#1", False),
    ("batch-written#7", False),
    ("before-commit", False),
    ("committed", True),
]


async def test_a_killed_import_leaves_all_or_nothing_and_a_reimport_changes_nothing(
        database_url: str, big_dump: Dump, tmp_path: Path) -> None:
    async with connected(database_url) as monitor:
        empty = dict.fromkeys(("tasks", "task_dependencies", "index_entries",
                               "index_namespaces"), 0)
        assert await counts(monitor) == empty
        kills: list[Kill] = []
        full: dict[str, int] | None = None
        for number, (point, complete) in enumerate(KILL_POINTS):
            log = tmp_path / f"kill-{number}.log"
            process = start_import(database_url, big_dump.path, log, stop_at=point)
            kill = Kill(point)
            try:
                await stopped(process, log)
                kill.writing_at_kill = bool(await importer_backends(monitor))
                process.send_signal(signal.SIGKILL)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
            # PostgreSQL ends the dead client's session (rolling its transaction back)
            # when it next touches the socket.
            await eventually_async(lambda: _no_sessions(monitor), what="the killed session to end")
            kill.counts = await counts(monitor)
            kills.append(kill)
            if point.startswith("batch-written") or point == "before-commit":
                # The transaction had written rows when it died, and they went with it.
                assert kill.writing_at_kill, kills
            if complete:
                full = kill.counts
                assert full["tasks"] == len(big_dump.task_ids), kills
                assert full["index_entries"] == len(big_dump.index_paths), kills
            else:
                assert kill.counts == empty, kills
        assert full is not None and full["task_dependencies"] > 0 and full["index_namespaces"] > 0
        before = await snapshot(monitor)

        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tcgraph", "import", "--database-url", database_url,
             str(big_dump.path)], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S)
        assert again.returncode == 0, again.stderr
        assert await counts(monitor) == full
        assert await snapshot(monitor) == before


async def _no_sessions(conn: asyncpg.Connection) -> bool:
    """No session on this database but `conn`'s own (the importer migrates on another)."""
    others: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()")
    return others == 0


GROUP_PAGE = ("g{n}: taskGroup(taskGroupId: {group}) "
              "{{ tasks(first: 1000) {{ nodes {{ taskId }} }} }}")


async def test_a_server_never_shows_half_an_import(
        database_url: str, read_dump: Dump, tmp_path: Path) -> None:
    groups = sorted(read_dump.groups)
    assert all(size <= 1000 for size in read_dump.groups.values())
    sample_paths = sorted(read_dump.index_paths)[:: max(1, len(read_dump.index_paths) // 50)]
    document = "{ %s\n idx: indexedTasks(indexPaths: %s) { taskId } }" % (
        "\n".join(GROUP_PAGE.format(n=n, group=orjson.dumps(g).decode())
                  for n, g in enumerate(groups)),
        orjson.dumps(sample_paths).decode())
    settings = Settings(database_url=database_url, pool_max_size=2)
    observations: list[tuple[int, int]] = []  # (tasks, index entries) seen while stopped
    async with connected(database_url) as monitor:
        with serving(create_app(settings, database_url)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:

                async def read() -> tuple[int, int]:
                    response = await client.post("/graphql", json={"query": document})
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert "errors" not in body, body["errors"]
                    data = body["data"]
                    tasks = sum(len(data[f"g{n}"]["tasks"]["nodes"])
                                for n in range(len(groups)) if data[f"g{n}"] is not None)
                    return tasks, sum(entry is not None for entry in data["idx"])

                # The import stops itself after every batch and before its commit: the
                # server reads while its transaction holds written rows, then it goes on.
                log = tmp_path / "import.log"
                process = start_import(database_url, read_dump.path, log,
                                       stop_at="batch-written,before-commit")
                try:
                    while True:
                        result = await asyncio.wait_for(asyncio.to_thread(
                            os.waitid, os.P_PID, process.pid,
                            os.WSTOPPED | os.WEXITED | os.WNOWAIT), IMPORT_TIMEOUT_S)
                        assert result is not None  # None only with WNOHANG
                        if result.si_code != os.CLD_STOPPED:
                            break
                        assert await importer_backends(monitor), "stopped without writing"
                        observations.append(await read())
                        process.send_signal(signal.SIGCONT)
                finally:
                    if process.poll() is None:
                        process.kill()
                    process.wait(timeout=30)
                assert process.returncode == 0, log.read_text()
                final = await read()
    # One stop per batch written, and the one before the commit.
    assert len(observations) >= 10, observations
    assert all(seen == (0, 0) for seen in observations), observations
    assert final == (len(read_dump.task_ids), len(sample_paths))
