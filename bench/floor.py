"""The true floor: hand-written statements that build the whole response body in PostgreSQL.

For each workload PostgreSQL builds the complete GraphQL response, `{"data":
...}` in exactly the shape tcgraph answers for the document in
`bench.workloads`, with `json_build_object` / `json_agg`, and hands it over as
bytes (`convert_to(..., 'UTF8')`: asyncpg returns a bytea as `bytes`, so not
even a UTF-8 decode happens in Python). The endpoint in `bench.server` passes
those bytes to the same uvicorn as tcgraph. One statement per request, except
where tcgraph itself gets the second core's help: above its batch_size (5,000
keys) a list goes in chunks to statements at once, and W4's two lists are two
statements at once; their runs of elements are joined as bytes. An index
probe per key, no Python object per row. The harness checks every answer
against tcgraph's.

Each function takes an asyncpg pool and the workload's GraphQL variables and
returns (the body, bytes; SQL statements run; milliseconds spent waiting on
them, as tcgraph's `extensions.sql.ms` counts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from tcgraph import pagination
from tcgraph.config import Settings
from tcgraph.model import split_index_path
from tcgraph.timefmt import sql_format_time

W3_PAGE = 1000
BATCH = Settings().batch_size  # tcgraph's keys per statement


@dataclass(frozen=True)
class Statement:
    """One workload request's statement and its parameters (EXPLAIN runs the same)."""

    sql: str
    args: tuple[Any, ...]


def _split(paths: list[str]) -> tuple[list[str], list[str]]:
    split = [split_index_path(path) for path in paths]
    return [namespace for namespace, _ in split], [name for _, name in split]


# --- W1 and W2: a list of keys, an element per key -------------------------
#
# Up to tcgraph's batch_size keys, one statement builds the whole body. Above
# it, the keys go in chunks of batch_size to as many statements at once, each
# building its run of elements (`string_agg` of their JSON), and the runs are
# joined as bytes: the parallelism tcgraph gets from its batches (two cores,
# two statements), with nothing built in Python but the brackets.


@dataclass(frozen=True)
class KeyList:
    """A root field answering a list of keys: each key's JSON element, and its FROM clause."""

    field: str  # the root field, the body's only key under "data"
    element: str  # SQL: one key's element (`k.ord` orders them)
    source: str  # SQL: FROM ... (the keys as k)

    def whole(self) -> str:
        return (f"SELECT convert_to(json_build_object('data', json_build_object('{self.field}', "
                f"COALESCE(json_agg({self.element} ORDER BY k.ord), '[]')))::text, 'UTF8') "
                f"{self.source}")

    def run(self) -> str:
        return (f"SELECT convert_to(COALESCE(string_agg(({self.element})::text, ',' "
                f"ORDER BY k.ord), ''), 'UTF8') {self.source}")

    def glue(self, runs: list[bytes]) -> bytes:
        return (b'{"data": {"' + self.field.encode() + b'": ['
                + b", ".join(r for r in runs if r) + b"]}}")


# tasks_label_created: one probe per label.
W1 = KeyList("labels", """json_build_object('label', k.label, 'latest', (
        SELECT json_build_object('status', json_build_object(
            'state', upper(t.state), 'expires', """ + sql_format_time("t.expires") + """))
        FROM tasks t WHERE t.label = k.label
        ORDER BY t.created DESC, t.task_id DESC LIMIT 1))""",
             "FROM unnest($1::text[]) WITH ORDINALITY AS k(label, ord)")
W1_SQL = W1.whole()


def w1_args(labels: list[str]) -> tuple[Any, ...]:
    return (labels,)


# index_entries_pkey, then tasks_pkey: two probes per path. `LIMIT 1` (the key
# is unique) keeps the LATERAL subquery from being pulled up into a plain join,
# which PostgreSQL plans as a hash join over a sequential scan of
# index_entries once there are thousands of keys. Runs are stored in the
# queue's shape; GraphQL lists every selected field, null where a run has none.
_RUN = ("json_build_object('runId', r -> 'runId', 'state', upper(r ->> 'state'), "
        + ", ".join(f"'{k}', r -> '{k}'" for k in (
            "reasonCreated", "reasonResolved", "workerGroup", "workerId", "takenUntil",
            "scheduled", "started", "resolved")) + ")")

W2 = KeyList("indexedTasks", """CASE WHEN e.task_id IS NULL THEN NULL ELSE json_build_object(
        'indexPath', k.path, 'taskId', e.task_id, 'task', (
            SELECT json_build_object('status', json_build_object(
                'state', upper(t.state), 'expires', """ + sql_format_time("t.expires") + """,
                'runs', (SELECT COALESCE(json_agg(""" + _RUN + """ ORDER BY x.n), '[]')
                         FROM jsonb_array_elements(t.runs) WITH ORDINALITY AS x(r, n))))
            FROM tasks t WHERE t.task_id = e.task_id)) END""", """
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(path, namespace, name, ord)
LEFT JOIN LATERAL (
    SELECT e.task_id FROM index_entries e
    WHERE e.namespace = k.namespace AND e.name = k.name AND e.expires > now()
    LIMIT 1
) e ON true""")
W2_SQL = W2.whole()


def w2_args(paths: list[str]) -> tuple[Any, ...]:
    return (paths, *_split(paths))


KEY_LISTS: dict[str, tuple[KeyList, str, Callable[[list[str]], tuple[Any, ...]]]] = {
    "W1": (W1, "labels", w1_args),
    "W2": (W2, "paths", w2_args),
}


def w1_statement(variables: dict[str, Any]) -> Statement:
    return Statement(W1_SQL, w1_args(variables["labels"]))


def w2_statement(variables: dict[str, Any]) -> Statement:
    return Statement(W2_SQL, w2_args(variables["paths"]))


# --- W3: one page of a task group, with each task's dependencies' states ---

# tasks_group for the page (one row more than a page says whether another
# follows); tasks_pkey for each dependency, in definition order. The cursor is
# pagination.encode's: URL-safe base64 of `["<kind>","<taskId>"]`, unpadded
# (task ids are slugs: nothing in them needs JSON escaping).
W3_SQL = """
WITH page AS (
    SELECT t.task_id, t.label, t.state, t.definition,
           row_number() OVER (ORDER BY t.task_id) AS n
    FROM (SELECT task_id, label, state, definition FROM tasks
          WHERE task_group_id = $1::text AND task_id > $2::text
          ORDER BY task_id LIMIT $3::int + 1) t
)
SELECT convert_to(CASE WHEN count(*) = 0 AND $4::boolean THEN '{"data": {"taskGroup": null}}'
ELSE json_build_object('data', json_build_object('taskGroup', json_build_object('tasks',
    json_build_object(
        'nodes', COALESCE(json_agg(json_build_object(
            'taskId', p.task_id, 'label', p.label,
            'status', json_build_object('state', upper(p.state)),
            'dependencies', (
                SELECT COALESCE(json_agg(json_build_object(
                    'taskId', d.task_id, 'status', json_build_object('state', upper(d.state)))
                    ORDER BY x.n), '[]')
                FROM jsonb_array_elements_text(p.definition -> 'dependencies')
                     WITH ORDINALITY AS x(id, n)
                JOIN tasks d ON d.task_id = x.id))
            ORDER BY p.task_id) FILTER (WHERE p.n <= $3), '[]'),
        'pageInfo', json_build_object(
            'hasNextPage', count(*) > $3,
            'endCursor', rtrim(translate(replace(encode(convert_to(
                '["' || $5::text || '","' || max(p.task_id) FILTER (WHERE p.n <= $3) || '"]',
                'UTF8'), 'base64'), E'\\n', ''), '+/', '-_'), '='))))))::text END, 'UTF8')
FROM page p"""


def w3_statement(variables: dict[str, Any]) -> Statement:
    after = pagination.decode_key(pagination.TASK_GROUP, variables.get("after"))
    return Statement(W3_SQL, (variables["group"], after or "", W3_PAGE, after is None,
                              pagination.TASK_GROUP))


# --- W4: 900 labels and 900 index paths, one answer ------------------------

# The two lists as two statements at once (tcgraph runs one per root field,
# concurrently; one statement for both was slower than tcgraph here), each
# building its run of elements, joined as bytes.
_INDEX_PROBE = """
LEFT JOIN LATERAL (
    SELECT e.task_id FROM index_entries e
    WHERE e.namespace = k.namespace AND e.name = k.name AND e.expires > now()
    LIMIT 1
) e ON true"""

W4_LABELS = KeyList("labels", """json_build_object('label', k.label, 'latest', (
        SELECT json_build_object('taskId', t.task_id, 'status', json_build_object(
            'state', upper(t.state), 'expires', """ + sql_format_time("t.expires") + """))
        FROM tasks t WHERE t.label = k.label
        ORDER BY t.created DESC, t.task_id DESC LIMIT 1))""",
                    "FROM unnest($1::text[]) WITH ORDINALITY AS k(label, ord)")
W4_PATHS = KeyList("indexedTasks", """CASE WHEN e.task_id IS NULL THEN NULL ELSE json_build_object(
        'indexPath', k.path, 'taskId', e.task_id, 'task', (
            SELECT json_build_object('status', json_build_object(
                'state', upper(t.state), 'expires', """ + sql_format_time("t.expires") + """))
            FROM tasks t WHERE t.task_id = e.task_id)) END""",
                   "FROM unnest($1::text[], $2::text[], $3::text[]) "
                   "WITH ORDINALITY AS k(path, namespace, name, ord)" + _INDEX_PROBE)


async def w4(pool: asyncpg.Pool, variables: dict[str, Any]) -> tuple[bytes, int, float]:
    (labels, labels_ms), (paths, paths_ms) = await asyncio.gather(
        _timed(pool, W4_LABELS.run(), w1_args(variables["labels"])),
        _timed(pool, W4_PATHS.run(), w2_args(variables["paths"])))
    body = (b'{"data": {"labels": [' + labels + b'], "indexedTasks": [' + paths + b"]}}")
    return body, 2, labels_ms + paths_ms


STATEMENTS: dict[str, Callable[[dict[str, Any]], Statement]] = {
    "W1": w1_statement, "W2": w2_statement, "W3": w3_statement,
}


async def answer(pool: asyncpg.Pool, workload: str,
                 variables: dict[str, Any]) -> tuple[bytes, int, float]:
    """The response body for `workload`, with its statement count and wait in ms (statements
    at once add up, as tcgraph counts them)."""
    if workload in KEY_LISTS:
        key_list, name, args = KEY_LISTS[workload]
        keys = variables[name]
        if len(keys) > BATCH:
            chunks = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]
            timed = await asyncio.gather(*(_timed(pool, key_list.run(), args(chunk))
                                           for chunk in chunks))
            return (key_list.glue([body for body, _ in timed]), len(chunks),
                    sum(ms for _, ms in timed))
    statement = STATEMENTS[workload](variables)
    body, ms = await _timed(pool, statement.sql, statement.args)
    return body, 1, ms


async def _timed(pool: asyncpg.Pool, sql: str, args: tuple[Any, ...]) -> tuple[bytes, float]:
    started = time.perf_counter()
    body = await pool.fetchval(sql, *args)
    return body, (time.perf_counter() - started) * 1000


def _bind(workload: str) -> Callable[[asyncpg.Pool, dict[str, Any]],
                                     Awaitable[tuple[bytes, int, float]]]:
    async def floor(pool: asyncpg.Pool, variables: dict[str, Any]) -> tuple[bytes, int, float]:
        return await answer(pool, workload, variables)

    return floor


FLOORS = {**{workload: _bind(workload) for workload in STATEMENTS}, "W4": w4}
