"""EXPLAIN (ANALYZE, BUFFERS) of tcgraph's hot statements, with the parameters the workloads send.

The statements are taken from `tcgraph.store.queries` itself (so the plans are
of the SQL that runs), with real keys: 10,000 labels, 10,000 index paths, the
10,000 task ids behind those paths, the W3 group's first page and the
dependencies of its tasks. Each is shown twice: the custom plan PostgreSQL
makes for these values, and the generic plan that a prepared statement may
switch to after five executions (asyncpg prepares every statement, so both can
run), each executed with `EXPLAIN (ANALYZE, BUFFERS)`.

A statement is an index lookup when no plan node scans a table sequentially.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass

import asyncpg

from bench import floor
from bench.dataset import Keys
from tcgraph.model import split_index_path


@dataclass
class Plan:
    name: str
    used_by: str
    sql: str
    keys: int
    custom: str  # EXPLAIN (ANALYZE, BUFFERS)
    generic: str  # the same, with plan_cache_mode = force_generic_plan
    seq_scans: list[str]  # relations scanned sequentially, in either plan

    @property
    def index_only(self) -> bool:
        return not self.seq_scans

    def as_dict(self) -> dict:
        return {**asdict(self), "index_only": self.index_only}


_SEQ = re.compile(r"Seq Scan on (\w+)")


def _statement(name: str) -> str | None:
    """A statement of tcgraph.store.queries by `module.NAME[.key]` (None if renamed)."""
    module, _, rest = name.partition(".")
    try:
        value: object = importlib.import_module(f"tcgraph.store.queries.{module}")
    except ImportError:
        return None
    for part in rest.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        if value is None:
            return None
    return value if isinstance(value, str) else None


async def plans(url: str, keys: Keys, size: int = 10_000) -> tuple[list[Plan], list[str]]:
    """(plans, notes about statements that could not be found)."""
    conn = await asyncpg.connect(url)
    notes: list[str] = []
    try:
        labels = keys.labels[:size]
        paths = keys.paths[:size]
        split = [split_index_path(p) for p in paths]
        namespaces, names = [s[0] for s in split], [s[1] for s in split]
        task_ids = [r[0] for r in await conn.fetch(
            "SELECT e.task_id FROM unnest($1::text[], $2::text[]) AS k(ns, name) "
            "JOIN index_entries e ON e.namespace = k.ns AND e.name = k.name", namespaces, names)]
        page_ids = [r[0] for r in await conn.fetch(
            "SELECT task_id FROM tasks WHERE task_group_id = $1 ORDER BY task_id LIMIT 1000",
            keys.w3_group)]
        dep_ids = [r[0] for r in await conn.fetch(
            "SELECT DISTINCT dependency_id FROM task_dependencies WHERE task_id = ANY($1::text[]) "
            "AND NOT dependency_id = ANY($1::text[])", page_ids)]
        no_filter = (None, None, None, None)
        wanted = [
            ("latest_by_label", "tasks._LATEST_BY_LABEL.latest", "W1, W4 (labels -> latest)",
             (labels, *no_filter), len(labels)),
            ("index_entries", "index_entries._ENTRIES_BY_PATH", "W2, W4 (index paths)",
             (namespaces, names), len(paths)),
            ("tasks_by_id", "tasks._TASKS_BY_ID", "W2, W4 (entry -> task)", (task_ids,), len(task_ids)),
            ("task_groups_exist", "tasks._GROUPS_EXIST", "W3 (taskGroup)", ([keys.w3_group],), 1),
            ("task_group_page", "tasks._GROUP_PAGE_ANY_STATE", "W3 (a page of 1,000)",
             ([keys.w3_group], [None], [None], [1000]), 1),
            ("tasks_by_id (dependencies)", "tasks._TASKS_BY_ID",
             "W3 (dependencies not on the page)", (dep_ids,), len(dep_ids)),
        ]
        found: list[Plan] = []
        for name, attr, used_by, args, count in wanted:
            sql = _statement(attr)
            if sql is None:
                notes.append(f"tcgraph.store.queries.{attr} not found: {name} not explained")
                continue
            found.append(await _explain(conn, name, used_by, sql, args, count))
        # The floor's statements, for comparison.
        found.append(await _explain(conn, "floor W1", "floor", floor.W1_SQL, (labels,),
                                    len(labels)))
        found.append(await _explain(conn, "floor W2", "floor", floor.W2_SQL, (namespaces, names),
                                    len(paths)))
        found.append(await _explain(conn, "floor W3", "floor", floor.W3_SQL,
                                    (keys.w3_group, "", floor.W3_PAGE + 1), 1))
        return found, notes
    finally:
        await conn.close()


async def _explain(conn: asyncpg.Connection, name: str, used_by: str, sql: str, args: tuple,
                   count: int) -> Plan:
    custom = "\n".join(r[0] for r in await conn.fetch(
        f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args))
    # The generic plan, executed with the same values: a prepared statement
    # forced to it, as asyncpg's prepared statements may switch to it.
    await conn.execute(f"PREPARE bench_explain AS {sql}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        # EXECUTE takes no bind parameters: the values go in as literals.
        values = ", ".join([await _literal(conn, a) for a in args])
        generic = "\n".join(r[0] for r in await conn.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE bench_explain({values})"))
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE bench_explain")
    scans = sorted(set(_SEQ.findall(custom)) | set(_SEQ.findall(generic)))
    custom, generic = _shorten(custom), _shorten(generic)
    return Plan(name=name, used_by=used_by, sql=sql.strip(), keys=count, custom=custom,
                generic=generic, seq_scans=scans)


_ARRAY = re.compile(r"'\{([^'{}]*)\}'")


def _shorten(plan: str) -> str:
    """Plans print array constants whole: keep their first elements."""

    def cut(m: re.Match) -> str:
        items = m.group(1).split(",")
        if len(items) <= 3:
            return m.group(0)
        return "'{" + ",".join(items[:2]) + f",... {len(items):,} elements}}'"

    return _ARRAY.sub(cut, plan)


async def _literal(conn: asyncpg.Connection, value: object) -> str:
    """`value` as an SQL literal, quoted by PostgreSQL itself."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return await conn.fetchval("SELECT quote_literal($1::text)", value)
    if isinstance(value, list):
        if all(isinstance(v, int) or v is None for v in value) and \
                any(isinstance(v, int) for v in value):
            return await conn.fetchval("SELECT quote_literal($1::int[]::text)", value) + "::int[]"
        return await conn.fetchval("SELECT quote_literal($1::text[]::text)", value) + "::text[]"
    raise TypeError(f"no literal for {type(value).__name__}")


def markdown(found: list[Plan], notes: list[str]) -> str:
    """The plans as a Markdown section (bench/results/plans.md; pasted into docs)."""
    out = []
    for plan in found:
        verdict = "index lookups only" if plan.index_only else \
            f"**sequential scan of {', '.join(plan.seq_scans)}**"
        keys = f"{plan.keys:,} key" + ("" if plan.keys == 1 else "s")
        out.append(f"### {plan.name} — {plan.used_by}, {keys}: {verdict}\n")
        out.append("```sql\n" + plan.sql + "\n```\n")
        out.append("Custom plan, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)`:\n")
        out.append("```\n" + plan.custom + "\n```\n")
        out.append("Generic plan (`plan_cache_mode = force_generic_plan`), same values:\n")
        out.append("```\n" + plan.generic + "\n```\n")
    for note in notes:
        out.append(f"- {note}\n")
    return "\n".join(out)
