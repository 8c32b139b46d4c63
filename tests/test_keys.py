"""One home for key limits and patterns: tcgraph.keys, and everything that checks keys with it."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from graphql_helpers import execute
from servers import asgi_client
from tcgraph import keys
from tcgraph.config import Settings
from tcgraph.ingest import shapes
from tcgraph.server import create_app

# A 22-character id of slugid's alphabet that is not a v4 UUID (its 9th character is
# no version nibble): Taskcluster refuses it everywhere.
NOT_A_SLUGID = "A" * 22
SLUGID = "NiOphb3AQf65nOJVfFZs7g"


def test_keys_imports_only_the_standard_library() -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import sys, tcgraph.keys; "
                               "print(' '.join(sorted(m for m in sys.modules "
                               "if m.split('.')[0] == 'tcgraph')))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert found == ["tcgraph", "tcgraph.keys"]


def test_settings_default_to_the_keys_limits() -> None:
    assert Settings().max_keys == keys.DEFAULT_MAX_KEYS == 10_000
    assert Settings().max_page_size == keys.DEFAULT_MAX_PAGE_SIZE


@pytest.mark.parametrize("value, matches", [
    (SLUGID, True), (NOT_A_SLUGID, False), (SLUGID[:-1] + "B", False), (SLUGID + "A", False),
])
def test_ingest_and_rest_check_taskcluster_s_slugid_pattern(value: str, matches: bool) -> None:
    assert bool(keys.SLUGID.fullmatch(value)) is matches
    if matches:
        assert shapes.slugid({"taskId": value}, "taskId") == value
    else:
        with pytest.raises(shapes.Invalid):
            shapes.slugid({"taskId": value}, "taskId")


async def test_rest_refuses_what_ingest_refuses(pool: asyncpg.Pool, settings: Settings,
                                                database_url: str) -> None:
    async with asgi_client(create_app(settings, database_url), pool) as client:
        refused = await client.get(f"/api/queue/v1/task/{NOT_A_SLUGID}")
        assert refused.status_code == 400
        assert keys.SLUGID_PATTERN in refused.json()["message"]


@pytest.mark.parametrize("path, matches", [
    ("gecko.v2.trunk", True), ("a", True), ("a..b", False), ("", False), (".a", False),
    ("a b", False), ("ünï", False),
])
def test_index_path_pattern(path: str, matches: bool) -> None:
    assert bool(keys.INDEX_PATH.fullmatch(path)) is matches
    assert bool(keys.NAMESPACE.fullmatch(path)) is (matches or path == "")


async def test_graphql_and_rest_refuse_too_many_keys_alike(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    tight = settings.with_(max_keys=2)
    ids = [SLUGID] * 3
    result = await execute(pool, tight,
                           "query ($ids: [ID!]!) { statuses(taskIds: $ids) { state } }",
                           {"ids": ids})
    graphql_message = result.errors[0]["message"]
    assert result.errors[0]["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": "max_keys",
                                              "value": 3, "maximum": 2}
    async with asgi_client(create_app(tight, database_url), pool) as client:
        refused = await client.post("/api/queue/v1/tasks/status", json={"taskIds": ids})
    assert refused.status_code == 400
    assert graphql_message == "`taskIds` has too many keys: 3 is over the limit of 2 (max_keys)"
    assert graphql_message in refused.json()["message"]


async def test_references_name_the_served_page_size(pool: asyncpg.Pool, settings: Settings,
                                                    database_url: str) -> None:
    async with asgi_client(create_app(settings.with_(max_page_size=50), database_url),
                           pool) as client:
        reference = (await client.get("/references/queue/v1/api.json")).json()
    statuses = next(e for e in reference["entries"] if e["name"] == "statuses")
    assert "default and maximum: 50;" in statuses["description"]
    assert "1000" not in statuses["description"]
