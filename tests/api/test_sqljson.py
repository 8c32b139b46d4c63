"""api/sqljson.py: response keys and type names reach the compiled SQL as literals only."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import asyncpg
import orjson
from strawberry.types.nodes import SelectedField

from factories import FakeTask, store
from tcgraph.api.schema import build_schema
from tcgraph.api.sqljson import _Compiler
from tcgraph.config import Settings
from tcgraph.store.sqlfrag import identifier

# GraphQL names cannot hold these; the compiler must not rely on that.
HOSTILE = "x', (SELECT 1)); DROP TABLE tasks; -- \"{row}{{json}}"


def field(name: str, alias: str | None = None, *selections: Any) -> SelectedField:
    return SelectedField(name=name, directives={}, arguments={}, selections=list(selections),
                         alias=alias)


async def test_an_alias_holding_quotes_and_sql_is_only_a_key_of_the_answer(
        pool: asyncpg.Pool, settings: Settings) -> None:
    task = FakeTask(label="hostile-alias")
    await store(pool, [task])
    info = SimpleNamespace(schema=build_schema(settings),
                           context=SimpleNamespace(settings=settings))
    selection = [field("taskId", HOSTILE), field("status", "s", field("state", HOSTILE + "2")),
                 field("__typename", HOSTILE + "3")]
    shape = _Compiler(info).compile("Task", selection, identifier("t"))  # type: ignore[arg-type]
    assert shape is not None
    text = shape.render()
    assert "'" + HOSTILE.replace("'", "''") + "'" in text
    async with pool.acquire() as conn:
        answer = await conn.fetchval(f"SELECT ({text})::text FROM tasks t WHERE t.task_id = $1",
                                     task.task_id)
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
    assert orjson.loads(answer) == {HOSTILE: task.task_id, "s": {HOSTILE + "2": "COMPLETED"},
                                    HOSTILE + "3": "Task"}
