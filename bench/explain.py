"""EXPLAIN (ANALYZE, BUFFERS) of tcgraph's hot statements, with the parameters the workloads send.

The statements are the ones tcgraph sends: each workload's document runs in
process with real keys (10,000 labels, 10,000 index paths, the W3 group's
first page, W4's 900 + 900), its statements are recorded with their
parameters, and those are explained. Each is shown twice: the custom plan PostgreSQL
makes for these values, and the generic plan that a prepared statement may
switch to after five executions (asyncpg prepares every statement, so both can
run), each executed with `EXPLAIN (ANALYZE, BUFFERS)`.

A statement is an index lookup when no plan node scans a table sequentially.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from bench import floor, server as bench_server, workloads
from bench.dataset import Keys
from tcgraph.api.context import Context
from tcgraph.api.schema import build_schema
from tcgraph.loaders import Loaders
from tcgraph.store.pool import Database, open_pool


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

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "index_only": self.index_only}


_SEQ = re.compile(r"Seq Scan on (\w+)")


class _Recording(Database):
    """A Database that records every statement it runs, with its parameters."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        self.statements.append((sql, args))
        return await super().fetch(sql, *args)


async def _statements(pool: asyncpg.Pool, query: str,
                      variables: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements tcgraph runs for one document, in order."""
    settings = bench_server.settings()
    db = _Recording(pool)
    context = Context(settings=settings, db=db, loaders=Loaders(db, settings.batch_size))
    result = await build_schema(settings).execute(query, variable_values=variables,
                                                  context_value=context)
    if result.errors:
        raise RuntimeError(f"explain: {result.errors[0].message}")
    return db.statements


def _keys_in(args: tuple[Any, ...]) -> int:
    return max((len(a) for a in args if isinstance(a, list)), default=1)


async def plans(url: str, keys: Keys, size: int = 10_000) -> tuple[list[Plan], list[str]]:
    """(plans, notes about documents whose statements could not be explained)."""
    conn = await asyncpg.connect(url)
    pool = await open_pool(url, bench_server.settings())
    notes: list[str] = []
    try:
        labels = keys.labels[:size]
        paths = keys.paths[:size]
        documents: list[tuple[str, str, dict[str, Any]]] = [
            ("W1", "labels -> latest -> status", {"labels": labels}),
            ("W2", "index paths -> task -> status, runs", {"paths": paths}),
            ("W3", "the group, then a page of 1,000 with dependencies",
             {"group": keys.w3_group, "after": None}),
            ("W4", "labels and index paths, one statement each",
             {"labels": keys.labels[:900], "paths": keys.paths[:900]}),
        ]
        found: list[Plan] = []
        for workload, what, variables in documents:
            try:
                statements = await _statements(pool, workloads.DOCS[workload], variables)
            except Exception as e:  # a document that fails is reported, not fatal
                notes.append(f"{workload} not explained: {type(e).__name__}: {e}"[:300])
                continue
            for n, (sql, args) in enumerate(statements, 1):
                name = f"{workload} statement {n} of {len(statements)}"
                found.append(await _explain(conn, name, f"{workload} ({what})", sql, args,
                                            _keys_in(args)))
        # The floor's statements, for comparison.
        for workload, variables, count in (
                ("W1", {"labels": labels}, len(labels)),
                ("W2", {"paths": paths}, len(paths)),
                ("W3", {"group": keys.w3_group, "after": None}, 1)):
            statement = floor.STATEMENTS[workload](variables)
            found.append(await _explain(conn, f"floor {workload}", "floor", statement.sql,
                                        statement.args, count))
        return found, notes
    finally:
        await pool.close()
        await conn.close()


async def _explain(conn: asyncpg.Connection, name: str, used_by: str, sql: str,
                   args: tuple[Any, ...], count: int) -> Plan:
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

    def cut(m: re.Match[str]) -> str:
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
    quoted: str
    if isinstance(value, str):
        quoted = await conn.fetchval("SELECT quote_literal($1::text)", value)
        return quoted
    if isinstance(value, list):
        if all(isinstance(v, int) or v is None for v in value) and \
                any(isinstance(v, int) for v in value):
            quoted = await conn.fetchval("SELECT quote_literal($1::int[]::text)", value)
            return quoted + "::int[]"
        quoted = await conn.fetchval("SELECT quote_literal($1::text[]::text)", value)
        return quoted + "::text[]"
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


async def _main(tasks: int) -> None:
    from pathlib import Path

    from bench import dataset, report
    from bench.pg import BenchPostgres, database_name

    root = Path(__file__).resolve().parent.parent
    pg = BenchPostgres(root / ".bench")
    pg.start()
    try:
        url = pg.url(database_name(tasks))
        found, notes = await plans(url, await dataset.pick_keys(url, 10_000))
    finally:
        pg.stop()
    (root / "bench" / "results" / "plans.md").write_text(markdown(found, notes))
    docs = root / "docs" / "performance.md"
    mine = markdown([p for p in found if p.used_by != "floor"], notes)
    docs.write_text(report.replace_section(docs.read_text(), "plans", mine))
    print(f"explained {len(found)} statements: bench/results/plans.md, docs/performance.md")


if __name__ == "__main__":
    # `python -m bench.explain [TASKS]`: the plans alone, on the dataset a run built.
    import asyncio
    import sys

    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
