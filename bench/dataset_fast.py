"""The benchmark's big datasets, generated inside PostgreSQL instead of through the importer.

`tcgraph.demo` writes through the importer (about 50 minutes for 2 million
tasks here); this writes the same rows with `INSERT ... SELECT` over
`generate_series`, with the indexes dropped during the load and built after,
then `ANALYZE`. What the rows look like comes from tcgraph.demo, not from here:

* the taskgraph (labels, kinds, queues, parents) is `demo._taskgraph`;
* each label's definition is `demo`'s own, made once in Python with marker
  values (group, parent, owner, revision, times) that the SQL replaces per task;
* its index paths are `demo`'s for that label, the revision and input hash
  replaced per push (the hash's period in pushes is read off `demo` too);
* outcomes are drawn from `demo`'s outcome tables and durations, per kind.

The SQL (bench/dataset_sql.py) draws from a hash of (seed, push, position), so a
build depends only on its `Shape`. `Shape.demo(tasks)` is the demo's own layout
(ten pushes four hours apart, every push a prefix of one graph, entries until
2030); tests/bench/test_dataset_fast.py compares a build of it with the
importer's result. `Shape.firefox(tasks)` is a deployment's: pushes of ~5,000
tasks (a window of a 20,000-label graph each), spread over 29 days up to the
build's hour, test tasks expiring after 28 days and the rest after a year, so
that a day's worth of tasks (1/29) has expired; index entries expire with their
task, as the index service's default does.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from pathlib import Path
from collections.abc import Callable

import asyncpg

from bench import dataset_sql
from tcgraph import demo
from tcgraph.timefmt import format_naive_utc

# Tables the build loads with their indexes dropped (and rebuilt after).
TABLES = ("tasks", "task_dependencies", "index_entries", "index_namespaces")
FIREFOX_GROUP = 5_000
FIREFOX_LABELS = 20_000
FIREFOX_DAYS = 29
TEST_EXPIRES_DAYS = 28
OTHER_EXPIRES_DAYS = 365

# Marker values in the definition templates, which become format() arguments.
GROUP = "@GROUP@"
PARENT = "@PARENT@"
OWNER = "@OWNER@"
REVISION = dataset_sql.REVISION
_MARK_TIME = datetime(2000, 1, 1)


@dataclass(frozen=True)
class Shape:
    """Everything a build depends on."""

    tasks: int
    pushes: int  # task groups
    labels: int  # the graph every push runs a window of
    newest: datetime  # the newest push
    interval: timedelta  # between pushes
    running_pushes: int  # the newest ones, still running
    test_expires: timedelta
    other_expires: timedelta
    index_expires: datetime | None  # None: an entry expires with its task
    window: bool  # True: each push a window of the graph's tests; False: a prefix
    seed: int = 1

    @classmethod
    def demo(cls, tasks: int, seed: int = 1) -> Shape:
        """The layout `tcgraph.demo.generate(tasks, seed)` writes."""
        pushes = min(demo.PUSHES, tasks)
        year = timedelta(days=365)
        return cls(tasks=tasks, pushes=pushes, labels=-(-tasks // pushes),
                   newest=demo.BASE_TIME, interval=demo.PUSH_INTERVAL, running_pushes=1,
                   test_expires=year, other_expires=year,
                   index_expires=datetime.fromisoformat(demo.INDEX_EXPIRES.replace("Z", "+00:00")),
                   window=False, seed=seed)

    @classmethod
    def firefox(cls, tasks: int, now: datetime, seed: int = 1) -> Shape:
        """A deployment's layout up to `now` (rounded down to the hour)."""
        pushes = max(1, round(tasks / FIREFOX_GROUP))
        return cls(tasks=tasks, pushes=pushes, labels=FIREFOX_LABELS,
                   newest=now.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
                   interval=timedelta(days=FIREFOX_DAYS) / max(1, pushes - 1),
                   running_pushes=max(1, pushes // 200),
                   test_expires=timedelta(days=TEST_EXPIRES_DAYS),
                   other_expires=timedelta(days=OTHER_EXPIRES_DAYS),
                   index_expires=None, window=True, seed=seed)

    def sizes(self) -> list[int]:
        """Tasks per push, oldest first; they sum to `tasks`."""
        if not self.window:
            return [self.tasks // self.pushes + (1 if age < self.tasks % self.pushes else 0)
                    for age in reversed(range(self.pushes))]
        # Pushes vary from half to one and a half times the mean, as a decision
        # task's optimised graph does; the one before the newest takes what is left.
        # The newest (W3's group) holds the mean, so W3 pages the same group size at
        # every dataset size.
        mean = self.tasks / self.pushes
        newest = min(self.tasks, round(mean))
        sizes: list[int] = []
        left = self.tasks - newest
        for push in range(self.pushes - 1):
            if push == self.pushes - 2:
                size = left
            else:
                size = min(left, int(mean * (0.5 + _fraction(self.seed, push))))
            sizes.append(min(size, self.labels))
            left -= sizes[-1]
        sizes.append(newest)
        if left:
            raise ValueError(f"{self.tasks} tasks do not fit {self.pushes} pushes of at most "
                             f"{self.labels} labels")
        return sizes


def _fraction(seed: int, n: int) -> float:
    digest = hashlib.sha256(f"{seed}:{n}".encode()).digest()
    return int.from_bytes(digest[:6], "big") / 2 ** 48


# --- what Python hands the SQL -------------------------------------------------


def _digest_period(spec: demo._Label) -> int:
    """After how many pushes a label's index paths change (0: they never do by age)."""
    first = demo._index_paths(spec, "autoland", REVISION, 0)
    for age in range(1, 50):
        if demo._index_paths(spec, "autoland", REVISION, age) != first:
            return age
    return 0


def spec_rows(shape: Shape) -> list[tuple[object, ...]]:
    """One row per label of the graph: its template definition, paths and run details."""
    graph = demo._taskgraph(shape.labels)
    position = {spec.label: i for i, spec in enumerate(graph)}
    depth: dict[str, int] = {}
    rows: list[tuple[object, ...]] = []
    for i, spec in enumerate(graph):
        depth[spec.label] = 0 if spec.parent is None else depth[spec.parent] + 1
        templates, path_templates = [], []
        for project in ("autoland", "mozilla-central"):
            dependencies = ([] if spec.parent is None else
                            [GROUP] if spec.parent == demo.DECISION_LABEL else [GROUP, PARENT])
            routes = demo._index_paths(spec, project, REVISION, 0)
            planned = demo._Planned(
                spec=spec, task_id="", dependencies=dependencies, created=_MARK_TIME,
                runs=[], retries_left=5, finished=None, routes=routes)
            element = demo._element(planned, GROUP, project, REVISION, OWNER)
            templates.append(_json(element["task"]))
            path_templates.append(routes)
        period = _digest_period(spec)
        digest0 = next((p.rsplit(".", 1)[1] for p in path_templates[0]
                        if period and ".cache." in p), "")
        templates = [_format_string(t, digest0) for t in templates]
        low, high = demo._MINUTES[spec.kind]
        worker_group = spec.platform.worker_group if spec.platform else "us-east-1"
        mac_test = bool(spec.platform and spec.platform.os == "macosx" and spec.kind == "test")
        rows.append((i, spec.label, spec.kind, position.get(spec.parent or ""),
                     depth[spec.label], templates[0], templates[1], path_templates[0],
                     path_templates[1], digest0, period, low * 60, high * 60, worker_group,
                     mac_test))
    return rows


def push_rows(shape: Shape) -> list[tuple[object, ...]]:
    """One row per push, oldest first: age, size, test window offset, project, time, rank,
    running, group id, revision, owner."""
    sizes = shape.sizes()
    rows: list[tuple[object, ...]] = []
    for push, size in enumerate(sizes):
        age = shape.pushes - 1 - push
        pushed = shape.newest - age * shape.interval
        offset = int(_fraction(shape.seed + 1, push) * shape.labels) if shape.window else 0
        rng = random.Random(f"{shape.seed}:{push}")
        rows.append((push, age, size, offset, demo.project_of(age), pushed,
                     int(pushed.timestamp()), age < shape.running_pushes, demo._slugid(rng),
                     f"{rng.getrandbits(160):040x}", rng.choice(demo._OWNERS)))
    return rows


def _format_string(template: str, digest0: str) -> str:
    """A definition template as a format() string: each marker becomes its argument, in
    the order bench/dataset_sql.py's format() call gives them."""
    marks = _time_marks()
    text = template.replace("%", "%%")
    values = [marks["created"], marks["deadline"], marks["expires"], GROUP, PARENT, OWNER,
              REVISION, REVISION[:12], digest0]
    for n, value in enumerate(values, start=1):
        if value:
            text = text.replace(value, f"%{n}$s")
    return text


def _json(value: object) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _time_marks() -> dict[str, str]:
    return {"created": format_naive_utc(_MARK_TIME),
            "deadline": format_naive_utc(_MARK_TIME + demo.DEADLINE),
            "expires": format_naive_utc(_MARK_TIME + demo.EXPIRES)}


# --- the build -------------------------------------------------------------------


@dataclass(frozen=True)
class BuildTimes:
    """Seconds per step of one build, and the CPU seconds the server spent on it (None
    when the server runs on another machine): on a shared machine, the CPU time says
    what an idle one would take."""

    load_s: float
    index_s: float
    analyze_s: float
    cpu_s: float | None = None

    @property
    def total_s(self) -> float:
        return self.load_s + self.index_s + self.analyze_s


async def build(conn: asyncpg.Connection, shape: Shape,
                log: Callable[[str], None] = lambda _: None) -> BuildTimes:
    """Fill the (migrated, empty) tcgraph tables of `conn`'s database with `shape`."""
    await conn.execute("SET TimeZone = 'UTC'")
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SET maintenance_work_mem = '256MB'")
    await conn.execute("SET work_mem = '64MB'")
    # Index builds in this backend only, so that its CPU time is the build's.
    await conn.execute("SET max_parallel_maintenance_workers = 0")
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    cpu = _cpu_s(backend)
    started = time.perf_counter()
    dropped = await _drop_indexes(conn)
    await conn.execute(dataset_sql.STAGING)
    await _copy(conn, "bench_spec", spec_rows(shape))
    await _copy(conn, "bench_push", push_rows(shape))
    await conn.execute(dataset_sql.load(shape, demo))
    load_s = time.perf_counter() - started
    log(f"dataset_fast: {shape.tasks:,} tasks loaded in {load_s:.0f} s")
    started = time.perf_counter()
    for statement in dropped:
        await conn.execute(statement)
    index_s = time.perf_counter() - started
    log(f"dataset_fast: {len(dropped)} indexes and keys built in {index_s:.0f} s")
    started = time.perf_counter()
    await conn.execute("DROP TABLE bench_spec, bench_push, bench_core")
    for table in TABLES:
        await conn.execute(f"VACUUM ANALYZE {table}")
    analyze_s = time.perf_counter() - started
    log(f"dataset_fast: VACUUM ANALYZE in {analyze_s:.0f} s")
    end_cpu = _cpu_s(backend)
    return BuildTimes(load_s=load_s, index_s=index_s, analyze_s=analyze_s,
                      cpu_s=None if cpu is None or end_cpu is None else end_cpu - cpu)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` on this machine, if it is here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drop_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop the loaded tables' indexes and primary keys; return the statements that
    make them again (keys first, as the migrations made them)."""
    keys = await conn.fetch("""
        SELECT c.conrelid::regclass::text AS tbl, c.conname, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c WHERE c.contype = 'p' AND c.conrelid::regclass::text = ANY($1)""",
                            list(TABLES))
    indexes = await conn.fetch("""
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        WHERE i.indrelid::regclass::text = ANY($1)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ORDER BY 1""", list(TABLES))
    for index in indexes:
        await conn.execute(f"DROP INDEX {index['name']}")
    for key in keys:
        await conn.execute(f"ALTER TABLE {key['tbl']} DROP CONSTRAINT {key['conname']}")
    return ([f"ALTER TABLE {k['tbl']} ADD CONSTRAINT {k['conname']} {k['def']}" for k in keys]
            + [i["def"] for i in indexes])


async def _copy(conn: asyncpg.Connection, table: str, rows: list[tuple[object, ...]]) -> None:
    await conn.copy_records_to_table(table, records=rows)


