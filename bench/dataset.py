"""The benchmark's database: built once, reused while its shape is the one asked for.

* `tcgraph.demo.write_demo(pool, tasks)`: `tasks / 10` labels with ten pushes
  (task groups) of history each, ~1.5 KB definitions, and the index entries the
  index service would have made (about half a path per task).
* One extra task group of exactly `W3_GROUP_SIZE` tasks for W3 (the demo's groups
  hold `tasks / 10` tasks each): the newest push of `generate(10 * W3_GROUP_SIZE,
  seed=2)`, imported through `tcgraph.ingest.files.import_documents` as the
  `listTaskGroup` pages it is, its labels prefixed with `w3/` so that it never
  becomes the latest task of a W1 label.
* `VACUUM ANALYZE`, then the peer's SQL functions in schema `bench_peer`.

Each size has its own database (`tcgraph_bench_<tasks>`), dropped and rebuilt
when the seed or `DATA_VERSION` differ from what `bench.meta` records, when the
tasks asked for differ, or when the row count is not the one recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from tcgraph.config import Settings
from tcgraph.demo import generate, write_demo
from tcgraph.ingest.files import import_documents
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import open_pool

DATA_VERSION = 1
SEED = 1
W3_GROUP_SIZE = 5_000
W3_SEED = 2
W3_LABEL_PREFIX = "w3/"


@dataclass
class DatasetInfo:
    tasks: int  # as asked (--tasks)
    stored_tasks: int  # including the W3 group
    labels: int
    task_groups: int
    index_entries: int
    avg_definition_bytes: int
    database_size: str
    w3_group: str
    w3_group_tasks: int
    built_s: float | None  # None when reused

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def database_exists(admin_url: str, database: str) -> bool:
    """Whether the cluster holds `database` (and pg_stat_statements is installed, for the
    figures the bench reads from it)."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", database)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()
    return bool(exists)


async def ensure(admin_url: str, url: str, database: str, tasks: int,
                 log: Callable[[str], None]) -> DatasetInfo:
    """Reuse the bench database if it holds `tasks` demo tasks, else (re)build it."""
    exists = await database_exists(admin_url, database)
    if exists:
        reason = await _stale(url, tasks)
        if reason is None:
            info = await describe(url, tasks, built_s=None)
            log(f"dataset: reusing {database} ({info.stored_tasks:,} tasks, "
                f"{info.labels:,} labels, "
                f"{info.index_entries:,} index entries)")
            await install_peer_functions(url)
            return info
        log(f"dataset: rebuilding {database}: {reason}")
    started = time.perf_counter()
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {database}")
    finally:
        await conn.close()
    await _build(url, tasks, log)
    info = await describe(url, tasks, built_s=time.perf_counter() - started)
    log(f"dataset: built in {info.built_s:.0f} s: {info.stored_tasks:,} tasks, "
        f"{info.labels:,} labels, "
        f"{info.index_entries:,} index entries, {info.database_size}")
    await install_peer_functions(url)
    return info


async def _stale(url: str, tasks: int) -> str | None:
    """Why the database must be rebuilt, or None if it can be reused."""
    conn = await asyncpg.connect(url)
    try:
        has_meta = await conn.fetchval("SELECT to_regclass('bench.meta') IS NOT NULL")
        if not has_meta:
            return "no bench.meta (unfinished or foreign build)"
        meta = dict(await conn.fetch("SELECT key, value FROM bench.meta"))
        wanted = {"tasks": str(tasks), "seed": str(SEED), "version": str(DATA_VERSION)}
        for key, value in wanted.items():
            if meta.get(key) != value:
                return f"{key} is {meta.get(key)}, want {value}"
        count = await conn.fetchval("SELECT count(*) FROM tasks")
        if str(count) != meta.get("stored_tasks"):
            return f"{count} tasks stored, {meta.get('stored_tasks')} recorded"
    finally:
        await conn.close()
    return None


async def _build(url: str, tasks: int, log: Callable[[str], None]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    # The pool write_demo wants (tcgraph's, with its codecs), as `tcgraph demo` opens it.
    pool = await open_pool(url, Settings().with_(pool_min_size=1, pool_max_size=2,
                                                 statement_timeout_ms=3_600_000))
    try:
        t0 = time.perf_counter()
        log(f"dataset: writing the demo dataset, {tasks:,} tasks (tcgraph.demo.write_demo)")
        summary = await write_demo(pool, tasks=tasks, seed=SEED)
        log(f"dataset: demo written in {time.perf_counter() - t0:.0f} s: {summary.tasks:,} tasks, "
            f"{summary.index_entries:,} index entries listed")
        t0 = time.perf_counter()
        group = await _write_w3_group(pool)
        log(f"dataset: W3 group {group} ({W3_GROUP_SIZE:,} tasks) written in "
            f"{time.perf_counter() - t0:.1f} s")
        async with pool.acquire() as conn:
            t0 = time.perf_counter()
            await conn.execute("VACUUM ANALYZE")
            log(f"dataset: VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s")
            stored = await conn.fetchval("SELECT count(*) FROM tasks")
            await conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
            await conn.execute(
                "CREATE TABLE bench.meta (key text PRIMARY KEY, value text NOT NULL)")
            await conn.executemany("INSERT INTO bench.meta VALUES ($1, $2)", [
                ("tasks", str(tasks)), ("seed", str(SEED)), ("version", str(DATA_VERSION)),
                ("stored_tasks", str(stored)), ("w3_group", group),
            ])
    finally:
        await pool.close()


def w3_documents() -> tuple[str, list[tuple[str, object]]]:
    """The listTaskGroup pages of one `W3_GROUP_SIZE`-task group, labels prefixed."""
    pages: dict[str, list[dict[str, Any]]] = {}
    for document in generate(10 * W3_GROUP_SIZE, seed=W3_SEED):
        if isinstance(document, dict) and "taskGroupId" in document:
            pages.setdefault(document["taskGroupId"], []).append(document)
    group, newest = list(pages.items())[-1]  # the newest push: still running, mixed states
    for page in newest:
        for element in page["tasks"]:
            definition = element["task"]
            definition["metadata"]["name"] = W3_LABEL_PREFIX + definition["metadata"]["name"]
            if "label" in definition.get("tags", {}):
                definition["tags"]["label"] = W3_LABEL_PREFIX + definition["tags"]["label"]
    return group, [(f"w3 page {i}", page) for i, page in enumerate(newest)]


async def _write_w3_group(pool: asyncpg.Pool) -> str:
    group, documents = w3_documents()
    async with pool.acquire() as conn, conn.transaction():
        summary = await import_documents(conn, documents, "bench-w3")
    assert summary.tasks == W3_GROUP_SIZE, summary
    return group


async def describe(url: str, tasks: int, built_s: float | None) -> DatasetInfo:
    conn = await asyncpg.connect(url)
    try:
        group = await conn.fetchval("SELECT value FROM bench.meta WHERE key = 'w3_group'")
        row = await conn.fetchrow("""
            SELECT count(*) AS tasks, count(DISTINCT label) AS labels,
                   count(DISTINCT task_group_id) AS groups,
                   avg(octet_length(definition::text))::int AS def_bytes
            FROM tasks""")
        return DatasetInfo(
            tasks=tasks,
            stored_tasks=row["tasks"],
            labels=row["labels"],
            task_groups=row["groups"],
            index_entries=await conn.fetchval("SELECT count(*) FROM index_entries"),
            avg_definition_bytes=row["def_bytes"],
            database_size=await conn.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"),
            w3_group=group,
            w3_group_tasks=await conn.fetchval(
                "SELECT count(*) FROM tasks WHERE task_group_id = $1", group),
            built_s=built_s,
        )
    finally:
        await conn.close()


# --- keys ----------------------------------------------------------------


@dataclass
class Keys:
    labels: list[str]  # distinct labels of the demo (not the W3 group), in a fixed order
    paths: list[str]  # distinct unexpired index paths, in a fixed order
    w3_group: str


async def pick_keys(url: str, most: int) -> Keys:
    """Up to `most` labels and index paths, the same ones for the same database.

    The order is md5 of the key: deterministic, and spread over the key space
    rather than clustered in one part of the indexes.
    """
    conn = await asyncpg.connect(url)
    try:
        labels = [r[0] for r in await conn.fetch(
            "SELECT label FROM (SELECT DISTINCT label FROM tasks WHERE label NOT LIKE 'w3/%') s "
            "ORDER BY md5(label) LIMIT $1", most)]
        paths = [r[0] for r in await conn.fetch(
            "SELECT p FROM (SELECT namespace || '.' || name AS p FROM index_entries "
            "WHERE expires > now()) s ORDER BY md5(p) LIMIT $1", most)]
        group = await conn.fetchval("SELECT value FROM bench.meta WHERE key = 'w3_group'")
    finally:
        await conn.close()
    return Keys(labels=labels, paths=paths, w3_group=group)


def take(keys: list[str], n: int) -> list[str]:
    """The first `n` keys; if there are fewer, they repeat (only on small datasets)."""
    if len(keys) >= n:
        return keys[:n]
    return [keys[i % len(keys)] for i in range(n)]


# --- the peer's functions --------------------------------------------------

# PostGraphile v4 exposes STABLE functions of an introspected schema as root
# query fields and `<table>_<name>(row)` functions as computed columns. The
# peer gets the same hand-written index lookups as the floor: one statement
# per root field, an index probe per key.
PEER_SCHEMA = "bench_peer"
PEER_SQL = r"""
DROP SCHEMA IF EXISTS bench_peer CASCADE;
CREATE SCHEMA bench_peer;

CREATE VIEW bench_peer.task AS
SELECT task_id, task_group_id, label, state, created, expires, runs, definition
FROM public.tasks;

-- W1, W4: labels -> the latest task (tasks_label_created, one probe per label).
CREATE FUNCTION bench_peer.latest_by_labels(labels text[]) RETURNS SETOF bench_peer.task
LANGUAGE sql STABLE AS $$
    SELECT t.* FROM unnest(labels) WITH ORDINALITY AS k(label, ord)
    CROSS JOIN LATERAL (
        SELECT v.* FROM bench_peer.task v WHERE v.label = k.label
        ORDER BY v.created DESC, v.task_id DESC LIMIT 1
    ) t
    ORDER BY k.ord
$$;

-- W2, W4: index paths -> entry (index_entries_pkey) -> task (tasks_pkey), flat.
CREATE TYPE bench_peer.indexed_status AS (
    index_path text, task_id text, state text, expires timestamptz, runs jsonb);
CREATE FUNCTION bench_peer.indexed_statuses(paths text[]) RETURNS SETOF bench_peer.indexed_status
LANGUAGE sql STABLE AS $$
    SELECT k.path, e.task_id, t.state, t.expires, t.runs
    FROM (
        SELECT path, ord, strpos(reverse(path), '.') AS dot
        FROM unnest(paths) WITH ORDINALITY AS u(path, ord)
    ) k
    CROSS JOIN LATERAL (
        SELECT e.task_id FROM public.index_entries e
        WHERE e.namespace = CASE WHEN k.dot = 0 THEN ''
                                 ELSE left(k.path, length(k.path) - k.dot) END
          AND e.name = CASE WHEN k.dot = 0 THEN k.path ELSE right(k.path, k.dot - 1) END
          AND e.expires > now()
        LIMIT 1  -- unique key; keeps the probe from becoming a hash join
    ) e
    LEFT JOIN LATERAL (
        SELECT t.state, t.expires, t.runs FROM public.tasks t WHERE t.task_id = e.task_id
    ) t ON true
    ORDER BY k.ord
$$;

-- W3: one page of a group by task id (tasks_group); page_size + 1 rows, the
-- last one only saying that another page follows.
CREATE FUNCTION bench_peer.task_group_page(group_id text, after_id text, page_size integer)
RETURNS SETOF bench_peer.task LANGUAGE sql STABLE AS $$
    SELECT v.* FROM bench_peer.task v
    WHERE v.task_group_id = group_id AND v.task_id > coalesce(after_id, '')
    ORDER BY v.task_id LIMIT page_size + 1
$$;

-- W3: a task's dependencies, in definition order (tasks_pkey): Task.dependencies.
CREATE FUNCTION bench_peer.task_dependencies(t bench_peer.task) RETURNS SETOF bench_peer.task
LANGUAGE sql STABLE AS $$
    SELECT d.* FROM jsonb_array_elements_text(t.definition -> 'dependencies')
         WITH ORDINALITY AS x(id, n)
    JOIN bench_peer.task d ON d.task_id = x.id
    ORDER BY x.n
$$;
"""


async def install_peer_functions(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(PEER_SQL)
    finally:
        await conn.close()
