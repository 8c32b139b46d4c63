"""The oracle: tcgraph answers every recorded request as the real Taskcluster 106 did.

The deployment's data is imported from the recorded answers themselves (listTaskGroup
pages, queue.task definitions, queue.status answers, index entries) through tcgraph's
importer; then every one of the 1,137 recorded requests is replayed against a real
tcgraph server and its status and body compared (see `replay` for what is normalised).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from jsonschema.validators import validator_for
from referencing import Registry, Resource

from api.rest import replay
from conftest import FilledDatabase
from servers import serving
from tcgraph.api import references
from tcgraph.config import Settings
from tcgraph.ingest.files import import_documents
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool


@pytest.fixture(scope="module")
def root_url(filled_database: FilledDatabase) -> Iterator[str]:
    recorded = replay.records()

    async def fill(url: str) -> None:
        pool = await open_pool(url, Settings())
        try:
            async with pool.acquire() as conn, conn.transaction():
                docs = [("", document) for document in replay.documents(recorded)]
                await import_documents(conn, docs, "rest.jsonl")
        finally:
            await pool.close()

    with filled_database() as url:
        asyncio.run(fill(url))
        with serving(create_app(Settings(database_url=url), url)) as root:
            yield root


def _output_schemas(root: str) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """The output schema tcgraph's references give each method, by (service, method)."""
    prefix = f"{root}/schemas/"

    def retrieve(uri: str) -> Resource[Any]:
        service, _, name = uri.removeprefix(prefix).partition("/")
        return Resource.from_contents(references.schema_json(root, service, name))

    # referencing's stub hides Registry's attrs fields (retrieve=...) from mypy.
    registry: Registry[Any] = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    found = {}
    for service in references.SERVICES.values():
        for entry in service.entries:
            if entry.output is not None:
                schema = references.schema_json(root, service.name, entry.output.split("#")[0])
                found[(service.name, entry.name)] = validator_for(schema)(schema,
                                                                          registry=registry)
    return found


def test_taskcluster_answers_match_the_output_schemas_tcgraph_publishes() -> None:
    """Every recorded 200 body is valid under the schema tcgraph's references name for it."""
    schemas = _output_schemas(replay.RECORDED_ROOT)
    checked = 0
    for record in replay.records():
        if record.status == 200 and (record.service, record.method) in schemas:
            schemas[(record.service, record.method)].validate(record.response)
            checked += 1
    assert checked == 1093  # every recorded 200 but the four pings, which have no schema


def _items_by_id(recorded: list[replay.Record]) -> dict[str, dict[str, bytes]]:
    """Per unordered method, every item Taskcluster answered, by task id."""
    found: dict[str, dict[str, bytes]] = defaultdict(dict)
    for r in recorded:
        if r.method in replay.UNORDERED and r.status == 200:
            for item in r.response[replay.UNORDERED[r.method]]:
                found[r.method][item["taskId"]] = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return found


def _unordered_page_matches(record: replay.Record, body: Any,
                            reference: dict[str, bytes]) -> bool:
    """A page of an unordered batch reply: as many items, each one Taskcluster's for its id."""
    key = replay.UNORDERED[record.method]
    theirs, ours = record.response.get(key, []), body.get(key, [])
    rest_theirs = {k: v for k, v in record.response.items() if k != key}
    rest_ours = {k: v for k, v in body.items() if k != key}
    return (len(theirs) == len(ours)
            and replay.normalise(record.method, rest_theirs, "")
            == replay.normalise(record.method, rest_ours, "")
            and all(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
                    == reference.get(item["taskId"]) for item in ours))


def test_every_recorded_request_is_answered_as_taskcluster_did(root_url: str) -> None:
    recorded = replay.records()
    reference = _items_by_id(recorded)
    tokens = replay.Tokens()
    schemas = _output_schemas(root_url)
    # Per walk of an unordered method: the ids tcgraph and Taskcluster gave so far.
    walks: dict[tuple[Any, ...], tuple[list[str], list[str]]] = {}
    mismatches: list[str] = []
    races: list[int] = []
    with httpx.Client(base_url=root_url, timeout=60) as client:
        for record in recorded:
            verb, path = record.request()
            response = client.request(verb, path, params=tokens.query(record),
                                      json=record.payload if verb == "POST" else None)
            body = response.json()
            tokens.returned(record, body)
            if response.status_code == 200 and (record.service, record.method) in schemas:
                schemas[(record.service, record.method)].validate(body)
            if record.method in replay.UNORDERED and response.status_code == 200 == record.status:
                same = _unordered_page_matches(record, body, reference[record.method])
                if record.token is None or record.token not in tokens.theirs:
                    walks[record.walk] = ([], [])
                ours, theirs = walks[record.walk]
                ours += replay.unordered_ids(record.method, body)
                theirs += replay.unordered_ids(record.method, record.response)
                if "continuationToken" not in record.response:
                    same = same and sorted(ours) == sorted(theirs)
            else:
                same = (response.status_code == record.status
                        and replay.normalise(record.method, body, root_url)
                        == replay.normalise(record.method, record.response, root_url))
            if not same and response.status_code == 200 and replay.expiry_race_only(
                    record.method, replay.normalise(record.method, body, root_url),
                    replay.normalise(record.method, record.response, root_url)):
                races.append(record.position)
            elif not same:
                mismatches.append(
                    f"#{record.position} {record.service}.{record.method}{list(record.args)} "
                    f"{record.query}: {record.status} -> {response.status_code}\n"
                    f"  theirs: {orjson.dumps(record.response).decode()[:600]}\n"
                    f"  ours:   {response.text[:600]}")
    exact = len(recorded) - len(mismatches) - len(races)
    print(f"\nTaskcluster 106 recording: {exact} of {len(recorded)} requests answered exactly "
          f"as recorded; {len(races)} differ only in namespace expiries that Taskcluster's "
          f"index service left to a race (records {races}); {len(mismatches)} mismatched")
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])
