"""An import is all or nothing, even when its process is SIGKILLed mid-write.

`tcgraph import` writes each file in one transaction. These tests run the real command
in a subprocess on a large JSON Lines file, kill it at seeded moments (one of them while
its transaction is known to be writing, as pg_stat_activity shows), and check that the
database never holds part of the file: not after a kill, and not as a server sees it
while the import runs.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from servers import serving
from tcgraph.config import Settings
from tcgraph.demo import generate
from tcgraph.server import create_app

KILL_TASKS = 20_000  # about 2-3 s of writing on a 2-core machine
READ_TASKS = 10_000  # ten task groups of 1,000: one GraphQL page each
SEED = 20261101
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


def start_import(url: str, dump: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tcgraph", "import", "--database-url", url, str(dump)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


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
    return await conn.fetch(
        "SELECT pid, backend_xid, left(query, 40) AS query FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'tcgraph' "
        "AND backend_xid IS NOT NULL")


async def tcgraph_sessions(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'tcgraph'")


async def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll `condition()` until it is truthy; fail after `timeout` (or if `process` ended)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await condition()
        if found:
            return found
        if process is not None and process.poll() is not None:
            return None
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@dataclass
class Kill:
    moment: str
    delay: float
    alive_at_kill: bool = False
    writing_at_kill: bool = False
    counts: dict[str, int] | None = None


async def test_a_killed_import_leaves_all_or_nothing_and_a_reimport_changes_nothing(
        database_url: str, big_dump: Dump, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    monitor = await asyncpg.connect(database_url)
    try:
        assert await counts(monitor) == dict.fromkeys(
            ("tasks", "task_dependencies", "index_entries", "index_namespaces"), 0)
        # Moments to kill at: before the process reaches the database, once it has a
        # session, and at three seeded delays after its transaction started writing.
        schedule = [
            ("during start-up", rng.uniform(0.05, 0.2)),
            ("once connected", rng.uniform(0.0, 0.1)),
            ("writing", rng.uniform(0.0, 0.2)),
            ("writing", rng.uniform(0.2, 0.8)),
            ("writing", rng.uniform(0.5, 1.2)),
        ]
        kills: list[Kill] = []
        for number, (moment, delay) in enumerate(schedule):
            process = start_import(database_url, big_dump.path, tmp_path / f"kill-{number}.log")
            kill = Kill(moment, delay)
            try:
                if moment == "once connected":
                    await wait_for(lambda: tcgraph_sessions(monitor), 30, "a session", process)
                elif moment == "writing":
                    await wait_for(lambda: importer_backends(monitor), 30, "writing", process)
                await asyncio.sleep(delay)
                kill.writing_at_kill = bool(await importer_backends(monitor))
                kill.alive_at_kill = process.poll() is None
                process.send_signal(signal.SIGKILL)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
            # PostgreSQL ends the dead client's session (rolling its transaction back)
            # when it next touches the socket.
            await wait_for(lambda: _no_sessions(monitor), 30, "the killed session to end")
            kill.counts = await counts(monitor)
            kills.append(kill)
            # Nothing, or (if the kill came after the commit) everything.
            assert kill.counts["tasks"] in (0, len(big_dump.task_ids)), kills
            assert kill.counts["index_entries"] in (0, len(big_dump.index_paths)), kills

        landed_mid_write = [k for k in kills if k.alive_at_kill and k.writing_at_kill]
        assert landed_mid_write, f"no kill landed while the import was writing: {kills}"
        # A kill while writing rolled the written rows back.
        assert any(k.counts == dict.fromkeys(k.counts, 0) for k in landed_mid_write), kills

        started = time.monotonic()
        completed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tcgraph", "import", "--database-url", database_url,
             str(big_dump.path)], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S)
        assert completed.returncode == 0, completed.stderr
        import_s = time.monotonic() - started
        full = await counts(monitor)
        assert full["tasks"] == len(big_dump.task_ids)
        assert full["index_entries"] == len(big_dump.index_paths)
        assert full["task_dependencies"] > 0 and full["index_namespaces"] > 0
        for kill in kills:  # every table all or nothing, together
            assert kill.counts in (full, dict.fromkeys(full, 0)), (kill, full)
        before = await snapshot(monitor)

        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tcgraph", "import", "--database-url", database_url,
             str(big_dump.path)], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S)
        assert again.returncode == 0, again.stderr
        assert await counts(monitor) == full
        assert await snapshot(monitor) == before
        assert import_s < IMPORT_TIMEOUT_S
    finally:
        await monitor.close()


async def _no_sessions(conn: asyncpg.Connection) -> bool:
    """No session on this database but `conn`'s own (the importer migrates on another)."""
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()") == 0


GROUP_PAGE = "g{n}: taskGroup(taskGroupId: {group}) {{ tasks(first: 1000) {{ nodes {{ taskId }} }} }}"


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
    observations: list[tuple[int, int, bool]] = []  # (tasks, index entries, import writing)
    monitor = await asyncpg.connect(database_url)
    try:
        with serving(create_app(settings, database_url)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                process = start_import(database_url, read_dump.path, tmp_path / "import.log")
                try:
                    deadline = time.monotonic() + IMPORT_TIMEOUT_S
                    while True:
                        done = process.poll() is not None
                        writing = bool(await importer_backends(monitor))
                        response = await client.post("/graphql", json={"query": document})
                        assert response.status_code == 200, response.text
                        body = response.json()
                        assert "errors" not in body, body["errors"]
                        data = body["data"]
                        tasks = sum(len(data[f"g{n}"]["tasks"]["nodes"])
                                    for n in range(len(groups)) if data[f"g{n}"] is not None)
                        entries = sum(entry is not None for entry in data["idx"])
                        observations.append((tasks, entries, writing))
                        if done:
                            break
                        assert time.monotonic() < deadline, "the import did not finish"
                finally:
                    if process.poll() is None:
                        process.kill()
                    process.wait(timeout=30)
        assert process.returncode == 0, (tmp_path / "import.log").read_text()
    finally:
        await monitor.close()
    full = (len(read_dump.task_ids), len(sample_paths))
    # Tasks and index entries are read by different statements, so each is checked alone.
    assert all(tasks in (0, full[0]) and entries in (0, full[1])
               for tasks, entries, _ in observations), observations
    assert observations[-1][:2] == full
    # Reads were made while the import's transaction was writing, and saw none of it.
    during = [o for o in observations if o[2]]
    assert len(during) >= 3, observations
    assert all(o[:2] == (0, 0) for o in during[:-1]), observations
