"""The SQL of bench/dataset_fast.py: staging tables, and the statements that fill tcgraph's.

Every task is a (push, position) pair: the push's row (bench_push) gives its
group, project, revision, owner and time; the position's row (bench_spec) its
label, template definition and index paths. Draws are hashes of (seed, push,
position, what is drawn), so a build is a pure function of its Shape.

The core of each push (decision task, toolchains, builds, signing, repackaging:
the labels tests depend on) is written first into bench_core, depth by depth,
because a task runs only when its parent completed, and starts when it
finished. Tests then read their build's row there.
"""

from __future__ import annotations

from typing import Any

from tcgraph.timefmt import sql_format_time

# The revision in the templates (definitions and index paths) that the SQL replaces
# per push: 40 characters, like a revision, whose first 12 stand for the short form.
REVISION = "@REVISION" + "#" * 31

STAGING = """
CREATE TEMP TABLE bench_spec (
    position int PRIMARY KEY, label text NOT NULL, kind text NOT NULL, parent int, depth int,
    def_autoland text NOT NULL, def_central text NOT NULL,
    paths_autoland text[] NOT NULL, paths_central text[] NOT NULL,
    digest0 text NOT NULL, period int NOT NULL, low_s int NOT NULL, high_s int NOT NULL,
    worker_group text NOT NULL, mac_test boolean NOT NULL);
CREATE TEMP TABLE bench_push (
    push int PRIMARY KEY, age int NOT NULL, size int NOT NULL, test_offset int NOT NULL,
    project text NOT NULL, pushed timestamptz NOT NULL, rank bigint NOT NULL,
    running boolean NOT NULL, group_id text NOT NULL, revision text NOT NULL,
    owner text NOT NULL);
CREATE TEMP TABLE bench_core (
    push int, position int, task_id text, ok boolean, finished timestamptz,
    PRIMARY KEY (push, position));
"""


def _u(salt: str, seed: int) -> str:
    """A uniform draw in [0, 1) for this task and `salt`."""
    return (f"((hashtextextended(p.push || ':' || s.position || ':{salt}', {seed}) "
            f"& 281474976710655)::float8 / 281474976710656.0)")


def _outcome(tables: dict[str, Any], u: str) -> str:
    """CASE over kind: the first outcome whose cumulative chance exceeds `u`."""
    arms = []
    for kind, outcomes in tables.items():
        total, steps = 0.0, []
        for outcome, chance in outcomes:
            total += chance
            steps.append(f"WHEN {u} < {total!r} THEN '{outcome}'")
        arms.append(f"WHEN '{kind}' THEN CASE {' '.join(steps)} ELSE '{outcomes[0][0]}' END")
    return f"CASE s.kind {' '.join(arms)} END"


def _rows(shape: Any, demo: Any, where: str) -> str:
    """SELECT of every column a task needs, for the (push, position) pairs `where` keeps."""
    seed = shape.seed
    core = "(SELECT count(*) FROM bench_spec WHERE kind <> 'test')::int"
    tests = f"greatest({shape.labels} - {core}, 1)"
    test_life_s = shape.test_expires.total_seconds()
    other_life_s = shape.other_expires.total_seconds()
    key = f"'{seed}:' || p.push || ':' || s.position"
    return f"""
SELECT p.push, s.position, s.kind, s.label, s.parent, p.project, p.group_id, p.rank,
       p.revision, p.owner, p.age, s.def_autoland, s.def_central, s.paths_autoland,
       s.paths_central, s.digest0, s.period, s.worker_group, s.mac_test,
       CASE WHEN s.parent IS NULL THEN p.group_id ELSE
           rtrim(translate(encode(set_byte(set_byte(set_byte(b.raw, 0, get_byte(b.raw, 0) & 127),
               6, (get_byte(b.raw, 6) & 15) | 64), 8, (get_byte(b.raw, 8) & 63) | 128),
               'base64'), '+/', '-_'), '=') END AS task_id,
       c.task_id AS parent_id, c.ok AS parent_ok,
       t.created, t.created + interval '{demo.DEADLINE.total_seconds()} seconds' AS deadline,
       t.created + CASE WHEN s.kind = 'test' THEN interval '{test_life_s} seconds'
                        ELSE interval '{other_life_s} seconds' END AS expires,
       t.ready, p.running,
       CASE WHEN t.ready IS NULL THEN CASE WHEN p.running THEN 'waiting' ELSE 'blocked' END
            WHEN p.running THEN {_outcome(demo._NEWEST_OUTCOMES, _u('o', seed))}
            ELSE {_outcome(demo._RESOLVED_OUTCOMES, _u('o', seed))} END AS outcome,
       t.ready + make_interval(secs => 1 + floor({_u('s', seed)} * 90)) AS scheduled,
       make_interval(secs => 5 + floor({_u('t', seed)} * 296)) AS wait,
       make_interval(secs => s.low_s + floor({_u('r', seed)} * (s.high_s - s.low_s + 1))) AS took,
       make_interval(secs => 180 + 1 + floor({_u('l', seed)} * 60)) AS later,
       CASE WHEN s.mac_test THEN 'macmini-r8-' || (1 + floor({_u('m', seed)} * 400))::int
            ELSE 'i-0' || left(md5({key} || ':w'), 16) END AS worker_id,
       'i-0' || left(md5({key} || ':v'), 16) AS retry_worker_id
FROM bench_push p
CROSS JOIN LATERAL (
    SELECT g AS position FROM generate_series(0, least(p.size, {core}) - 1) g
    UNION ALL
    SELECT {core} + (p.test_offset + g) % {tests}
    FROM generate_series(0, p.size - {core} - 1) g
) w
JOIN bench_spec s ON s.position = w.position
LEFT JOIN bench_core c ON c.push = p.push AND c.position = s.parent
CROSS JOIN LATERAL (SELECT decode(md5({key}), 'hex') AS raw) b
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.parent IS NULL THEN p.pushed
                ELSE p.pushed + interval '4 minutes' + s.position * interval '7 milliseconds'
           END AS created,
           CASE WHEN s.parent IS NULL THEN p.pushed WHEN c.ok THEN c.finished END AS ready
) t
WHERE {where}"""


def _timed(shape: Any, demo: Any, where: str) -> str:
    """`_rows` with each run's times and the time the task finished (NULL: not completed)."""
    return f"""
SELECT r.*, r.scheduled + r.wait AS started, r.scheduled + r.wait + r.took AS resolved,
       CASE r.outcome WHEN 'completed' THEN r.scheduled + r.wait + r.took
                      WHEN 'retried' THEN r.scheduled + r.wait + r.took + 2 * r.later END
           AS finished
FROM ({_rows(shape, demo, where)}) r"""


def _f(expression: str) -> str:
    return sql_format_time(f"({expression})")


# Each outcome's runs, as tcgraph.demo._runs makes them.
_RUN = """jsonb_strip_nulls(jsonb_build_object(
    'runId', {run_id}, 'state', {state}, 'reasonCreated', {created}, 'reasonResolved', {reason},
    'workerGroup', {group}, 'workerId', {worker}, 'takenUntil', {taken},
    'scheduled', {scheduled}, 'started', {started}, 'resolved', {resolved}))"""


def _run(run_id: str, state: str, created: str, scheduled: str, started: str = "NULL",
         resolved: str = "NULL", reason: str = "NULL", worker: str | None = None) -> str:
    group = "NULL" if worker is None else "x.worker_group"
    taken = "NULL" if worker is None else _f(f"{started} + interval '20 minutes'")
    return _RUN.format(
        run_id=run_id, state=state, created=created, reason=reason, group=group,
        worker="NULL" if worker is None else worker, taken=taken, scheduled=_f(scheduled),
        started="NULL" if started == "NULL" else _f(started),
        resolved="NULL" if resolved == "NULL" else _f(resolved))


def _runs() -> str:
    worker = "x.worker_id"
    return f"""CASE x.outcome
    WHEN 'waiting' THEN '[]'::jsonb
    WHEN 'blocked' THEN jsonb_build_array({_run("0", "'exception'", "'exception'", "x.deadline",
                                               resolved="x.deadline",
                                               reason="'deadline-exceeded'")})
    WHEN 'pending' THEN jsonb_build_array({_run("0", "'pending'", "'scheduled'", "x.scheduled")})
    WHEN 'running' THEN jsonb_build_array({_run("0", "'running'", "'scheduled'", "x.scheduled",
                                               "x.started", worker=worker)})
    WHEN 'retried' THEN jsonb_build_array(
        {_run("0", "'exception'", "'scheduled'", "x.scheduled", "x.started",
              "x.started + interval '3 minutes'", "'worker-shutdown'", worker)},
        {_run("1", "'completed'", "'retry'", "x.started + x.later", "x.started + 2 * x.later",
              "x.resolved + 2 * x.later", "'completed'", "x.retry_worker_id")})
    WHEN 'exception' THEN jsonb_build_array({_run("0", "'exception'", "'scheduled'", "x.scheduled",
                                                 "x.started", "x.resolved", "'claim-expired'",
                                                 worker)})
    ELSE jsonb_build_array({_run("0", "x.outcome", "'scheduled'", "x.scheduled", "x.started",
                                 "x.resolved", "x.outcome", worker)})
END"""


def load(shape: Any, demo: Any) -> str:
    """The statements that fill tasks, task_dependencies, index_entries and index_namespaces."""
    core = "s.kind <> 'test' AND s.depth = {depth}"
    core_steps = "".join(
        f"INSERT INTO bench_core SELECT push, position, task_id, finished IS NOT NULL, finished "
        f"FROM ({_timed(shape, demo, core.format(depth=d))}) x;\n"
        for d in range(4))
    digest = ("encode(sha256(convert_to(x.label || ':' || (x.age / x.period), 'UTF8')), 'hex')")
    # The template's markers are format() arguments (bench/dataset_fast.py FORMAT_ARGUMENTS).
    definition = f"""format(
        CASE WHEN x.project = 'mozilla-central' THEN x.def_central ELSE x.def_autoland END,
        {_f("x.created")}, {_f("x.deadline")}, {_f("x.expires")}, x.group_id,
        coalesce(x.parent_id, ''), x.owner, x.revision, left(x.revision, 12),
        CASE WHEN x.period > 0 THEN {digest} END)"""
    states = ("CASE x.outcome WHEN 'waiting' THEN 'unscheduled' WHEN 'blocked' THEN 'exception' "
              "WHEN 'retried' THEN 'completed' ELSE x.outcome END")
    runs_count = ("CASE x.outcome WHEN 'waiting' THEN 0 WHEN 'retried' THEN 2 ELSE 1 END")
    progress = ("CASE x.outcome WHEN 'waiting' THEN 0 WHEN 'pending' THEN 1 "
                "WHEN 'running' THEN 2 ELSE 3 END")
    index_expires = ("x.expires" if shape.index_expires is None
                     else f"'{shape.index_expires.isoformat()}'::timestamptz")
    paths = ("CASE WHEN x.project = 'mozilla-central' THEN x.paths_central "
             "ELSE x.paths_autoland END")
    path = (f"replace(replace(replace(q.path, '{REVISION}', x.revision), "
            f"'{REVISION[:12]}', left(x.revision, 12)), x.digest0, "
            f"CASE WHEN x.period > 0 THEN {digest} ELSE x.digest0 END)")
    return f"""
{core_steps}
INSERT INTO tasks (task_id, task_group_id, scheduler_id, task_queue_id, project_id, label,
                   priority, retries, retries_left, created, deadline, expires, state, runs,
                   status_rank, definition)
SELECT x.task_id, x.group_id, d.definition ->> 'schedulerId', d.definition ->> 'taskQueueId',
       x.project, x.label, d.definition ->> 'priority', (d.definition ->> 'retries')::int,
       (d.definition ->> 'retries')::int - CASE x.outcome WHEN 'retried' THEN 1 ELSE 0 END,
       x.created, x.deadline, x.expires, {states}, {_runs()},
       CASE WHEN {runs_count} = 0 THEN 0 ELSE {runs_count} * 10 + {progress} END, d.definition
FROM ({_timed(shape, demo, "true")}) x
-- OFFSET 0 keeps the definition built once per row, not once per column read from it.
CROSS JOIN LATERAL (SELECT ({definition})::jsonb AS definition OFFSET 0) d;

INSERT INTO task_dependencies (task_id, dependency_id)
SELECT x.task_id, v.dependency_id
FROM ({_rows(shape, demo, "s.parent IS NOT NULL")}) x
CROSS JOIN LATERAL (VALUES (x.group_id), (NULLIF(x.parent_id, x.group_id))) v(dependency_id)
WHERE v.dependency_id IS NOT NULL;

CREATE TEMP TABLE bench_entries AS
SELECT regexp_replace({path}, '\\.[^.]*$', '') AS namespace,
       regexp_replace({path}, '^.*\\.', '') AS name,
       x.task_id, x.rank::float8 AS rank, {index_expires} AS expires
FROM ({_timed(shape, demo, "true")}) x
CROSS JOIN LATERAL unnest({paths}) AS q(path)
WHERE x.finished IS NOT NULL;

-- The highest rank wins a path, as the index service's rule has it.
INSERT INTO index_entries (namespace, name, task_id, rank, data, expires, resolved)
SELECT DISTINCT ON (namespace, name) namespace, name, task_id, rank, '{{}}', expires, NULL
FROM bench_entries ORDER BY namespace, name, rank DESC;

-- Every namespace above an entry expires at the midnight after its newest entry,
-- a day later per level up (tcgraph.ingest.index_rules.namespaces).
INSERT INTO index_namespaces (parent, name, expires)
SELECT array_to_string(parts[1:level - 1], '.'), parts[level],
       max(date_trunc('day', latest) + (array_length(parts, 1) - level + 1) * interval '1 day')
FROM (SELECT string_to_array(namespace, '.') AS parts, max(expires) AS latest
      FROM index_entries GROUP BY namespace) n
CROSS JOIN LATERAL generate_series(1, array_length(parts, 1)) AS level
GROUP BY 1, 2;
DROP TABLE bench_entries;
"""
