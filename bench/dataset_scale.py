"""The scale series' databases: one per size, built by bench/dataset_fast.py and reused.

`ensure` builds `Shape.firefox(tasks)` up to now in `tcgraph_scale_<tasks>` (apart
from the main bench's importer-built `tcgraph_bench_<tasks>`), records what it
built in `bench.meta` (counts, W3's group: the newest push, the build's times),
and reuses the database while its size and DATA_VERSION match.
"""

from __future__ import annotations

from datetime import datetime, UTC
from collections.abc import Callable

import asyncpg

from bench import dataset
from bench.dataset_fast import FIREFOX_DAYS, Shape, build
from tcgraph.store.migrate import migrate

DATA_VERSION = 1


def database_name(tasks: int) -> str:
    """Its own database per size, apart from the main bench's importer-built ones."""
    return f"tcgraph_scale_{tasks}"


async def ensure(admin_url: str, url: str, database: str, tasks: int,
                 log: Callable[[str], None]) -> dataset.DatasetInfo:
    """Reuse the scale database of `tasks` tasks if it is complete, else build it
    (`Shape.firefox` up to now); W3's group is the newest push."""
    exists = await dataset.database_exists(admin_url, database)
    if exists and (reason := await _stale(url, tasks)) is None:
        info = await _described(url, tasks, built_s=None)
        log(f"dataset: reusing {database} ({info.stored_tasks:,} tasks)")
        await dataset.install_peer_functions(url)
        return info
    if exists:
        log(f"dataset: rebuilding {database}: {reason}")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        shape = Shape.firefox(tasks, datetime.now(UTC))
        log(f"dataset_fast: building {tasks:,} tasks ({shape.pushes:,} pushes over "
            f"{FIREFOX_DAYS} days, {shape.labels:,} labels)")
        times = await build(conn, shape, log)
        group = await conn.fetchval(
            "SELECT task_group_id FROM tasks ORDER BY created DESC LIMIT 1")
        await conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        await conn.execute("CREATE TABLE bench.meta (key text PRIMARY KEY, value text NOT NULL)")
        described = await _describe(conn)
        await conn.executemany("INSERT INTO bench.meta VALUES ($1, $2)", [
            ("tasks", str(tasks)), ("seed", str(shape.seed)), ("version", str(DATA_VERSION)),
            ("stored_tasks", str(described["stored_tasks"])), ("w3_group", group),
            ("labels", str(described["labels"])), ("task_groups", str(described["groups"])),
            ("index_entries", str(described["index_entries"])),
            ("avg_definition_bytes", str(described["def_bytes"])),
            ("built_s", f"{times.total_s:.0f}"), ("load_s", f"{times.load_s:.0f}"),
            ("index_s", f"{times.index_s:.0f}"), ("analyze_s", f"{times.analyze_s:.0f}"),
            ("cpu_s", "" if times.cpu_s is None else f"{times.cpu_s:.0f}"),
        ])
    finally:
        await conn.close()
    info = await _described(url, tasks, built_s=times.total_s)
    await dataset.install_peer_functions(url)
    return info


async def _stale(url: str, tasks: int) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('bench.meta') IS NOT NULL"):
            return "no bench.meta (unfinished build)"
        meta = dict(await conn.fetch("SELECT key, value FROM bench.meta"))
        for key, value in {"tasks": str(tasks), "version": str(DATA_VERSION)}.items():
            if meta.get(key) != value:
                return f"{key} is {meta.get(key)}, want {value}"
    finally:
        await conn.close()
    return None


async def _describe(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        "stored_tasks": await conn.fetchval("SELECT count(*) FROM tasks"),
        # tasks_label_created, an index-only scan
        "labels": await conn.fetchval("SELECT count(*) FROM (SELECT DISTINCT label FROM tasks) s"),
        "groups": await conn.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT task_group_id FROM tasks) s"),
        "index_entries": await conn.fetchval("SELECT count(*) FROM index_entries"),
        "def_bytes": await conn.fetchval(
            "SELECT avg(octet_length(definition::text))::int FROM tasks TABLESAMPLE SYSTEM (1)"),
    }


async def _described(url: str, tasks: int, built_s: float | None) -> dataset.DatasetInfo:
    conn = await asyncpg.connect(url)
    try:
        meta = dict(await conn.fetch("SELECT key, value FROM bench.meta"))
        group = meta["w3_group"]
        return dataset.DatasetInfo(
            tasks=tasks, stored_tasks=int(meta["stored_tasks"]), labels=int(meta["labels"]),
            task_groups=int(meta["task_groups"]), index_entries=int(meta["index_entries"]),
            avg_definition_bytes=int(meta["avg_definition_bytes"]),
            database_size=await conn.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"),
            w3_group=group,
            w3_group_tasks=await conn.fetchval(
                "SELECT count(*) FROM tasks WHERE task_group_id = $1", group),
            built_s=built_s)
    finally:
        await conn.close()
