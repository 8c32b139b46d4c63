"""Run a document in-process against a real database, as the HTTP view would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from tcgraph.api.context import Context
from tcgraph.api.schema import build_schema
from tcgraph.config import Settings


@dataclass
class Result:
    data: Any
    errors: list[dict]
    statements: int
    rows: int


async def execute(pool: asyncpg.Pool, settings: Settings, query: str,
                  variables: dict | None = None) -> Result:
    schema = build_schema(settings)
    context = Context.create(pool, settings)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    errors = [e.formatted for e in result.errors or []]
    return Result(result.data, errors, context.db.stats.statements, context.db.stats.rows)
