"""Run a document in-process against a real database, as the HTTP view would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from graphql import GraphQLFormattedError

from tcgraph.api.context import Context
from tcgraph.api.schema import build_schema
from tcgraph.config import Settings

# Every field of Task and of TaskStatus, for tests that check them all.
TASK_FIELDS = """taskId taskGroupId label schedulerId taskQueueId provisionerId workerType
    projectId priority retries created deadline expires
    metadata { name description owner source } tags routes definition"""
STATUS_FIELDS = """taskId provisionerId workerType taskQueueId schedulerId projectId taskGroupId
    priority deadline expires retriesLeft state
    runs { runId state reasonCreated reasonResolved workerGroup workerId takenUntil scheduled
           started resolved }"""


@dataclass
class Result:
    data: Any
    errors: list[GraphQLFormattedError]
    statements: int
    rows: int


async def execute(pool: asyncpg.Pool, settings: Settings, query: str,
                  variables: dict[str, Any] | None = None) -> Result:
    schema = build_schema(settings)
    context = Context.create(pool, settings)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    errors = [e.formatted for e in result.errors or []]
    # JSON built in PostgreSQL arrives as orjson fragments: read it as a client would.
    data = orjson.loads(orjson.dumps(result.data)) if result.data is not None else None
    return Result(data, errors, context.db.stats.statements, context.db.stats.rows)
