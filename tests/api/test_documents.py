"""api/documents.py: each distinct document parsed and checked once, in a bounded cache."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest
from graphql import parse

from bench.documents import resolve_inline
from factories import FakeTask, store
from tcgraph.api.context import Context
from tcgraph.api.documents import (
    AST_BYTES_PER_TOKEN, Checked, DocumentCache, document_hash, token_count,
)
from tcgraph.api.schema import Schema, build_schema
from tcgraph.config import Settings
from tcgraph.measure import lexed_tokens

STATUS = "query ($ids: [ID!]!) { statuses(taskIds: $ids) { taskId state } }"
# The shape of the document a reported attack sent: 700 small operations, 62 KB.
MANY_OPERATIONS = "\n".join(
    f'query Q{i} {{ task(taskId: "NiOphb3AQf65nOJVfFZs7g") {{ taskId label status {{ state }} }} }}'
    for i in range(700))


async def run(schema: Schema, pool: asyncpg.Pool, settings: Settings, document: str,
              variables: dict[str, Any] | None = None,
              operation: str | None = None) -> dict[str, Any]:
    context = Context.create(pool, settings)
    result = await schema.execute(document, variable_values=variables, context_value=context,
                                  operation_name=operation)
    answer = {"data": orjson.loads(orjson.dumps(result.data)),
              "errors": [e.formatted for e in result.errors or ()]}
    return answer


async def test_a_document_sent_twice_is_validated_once(pool: asyncpg.Pool,
                                                       settings: Settings) -> None:
    tasks = [FakeTask(), FakeTask(state="failed")]
    await store(pool, tasks)
    schema = build_schema(settings)
    first = await run(schema, pool, settings, STATUS, {"ids": [tasks[0].task_id]})
    second = await run(schema, pool, settings, STATUS, {"ids": [tasks[1].task_id]})
    assert schema.documents.validations == 1 and len(schema.documents) == 1
    assert first["data"] == {"statuses": [{"taskId": tasks[0].task_id, "state": "COMPLETED"}]}
    assert second["data"] == {"statuses": [{"taskId": tasks[1].task_id, "state": "FAILED"}]}


async def test_an_invalid_document_is_refused_alike_from_the_cache(
        pool: asyncpg.Pool, settings: Settings) -> None:
    schema = build_schema(settings)
    document = '{ task(taskId: "x") { nope } }'
    answers = [await run(schema, pool, settings, document) for _ in range(3)]
    assert schema.documents.validations == 1
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["errors"][0]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


async def test_many_operations_are_refused_once_then_from_the_cache(
        pool: asyncpg.Pool, settings: Settings) -> None:
    assert len(MANY_OPERATIONS) > 60_000
    schema = build_schema(settings)
    for _ in range(2):
        answer = await run(schema, pool, settings, MANY_OPERATIONS, operation="Q1")
        assert answer["data"] is None
        assert answer["errors"][0]["extensions"] == {
            "code": "LIMIT_EXCEEDED", "limit": "max_operations", "value": 700,
            "maximum": settings.max_operations}
    assert schema.documents.validations == 1


def test_a_decision_task_s_10000_keys_written_inline_fit_the_token_limit() -> None:
    """The largest legitimate document: tcgraph.client's, its 10,000 keys as literals."""
    document = resolve_inline()
    tokens = lexed_tokens(document, 10**6)
    assert tokens == 10_000 + 69  # the figure config.py and the README give
    assert tokens <= Settings().max_tokens
    assert token_count(parse(document)) == tokens + 2  # and the start and end markers


def test_the_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = DocumentCache(max_entries=3, max_bytes=1_000)

    def entry(n: int, size: int) -> tuple[str, Checked]:
        text = f"{{ a{n}: __typename }}"
        return document_hash(text), Checked(text, parse(text), (), size)

    for n in range(5):
        cache.put(*entry(n, 100))
    assert len(cache) == 3 and cache.bytes == 300
    assert cache.get(entry(0, 100)[0]) is None and cache.get(entry(4, 100)[0]) is not None
    cache.put(*entry(5, 900))  # evicts the least recently used until it fits
    assert cache.bytes <= 1_000 and cache.get(entry(5, 900)[0]) is not None
    assert cache.get(entry(4, 100)[0]) is not None and len(cache) == 2
    cache.put(*entry(6, 1_001))  # larger than the whole cache: never kept
    assert cache.get(entry(6, 1_001)[0]) is None and cache.bytes == 1_000


async def test_an_entry_is_charged_its_text_and_tokens(pool: asyncpg.Pool,
                                                       settings: Settings) -> None:
    schema = build_schema(settings)
    await run(schema, pool, settings, STATUS, {"ids": []})
    tokens = token_count(parse(STATUS))
    assert schema.documents.bytes == len(STATUS) + AST_BYTES_PER_TOKEN * tokens


@pytest.mark.parametrize("entries, kept", [(0, 0), (1, 1)])
async def test_a_cache_of_no_entries_keeps_nothing(pool: asyncpg.Pool, settings: Settings,
                                                   entries: int, kept: int) -> None:
    tight = settings.with_(document_cache_entries=entries)
    schema = build_schema(tight)
    for _ in range(2):
        assert (await run(schema, pool, tight, STATUS, {"ids": []}))["data"] == {"statuses": []}
    assert len(schema.documents) == kept and schema.documents.validations == 2 - kept
