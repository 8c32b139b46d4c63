"""RFC 128: the manifest, every document it names, and REST replies checked against them.

The test reads the references the way a client generator would: from the manifest, building
each method's URL from `serviceName`, `apiVersion` and `route`, and fetching the schemas the
entries name (and the ones they `$ref`) from the server itself.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import asyncpg
import httpx
import jsonschema
import pytest
from jsonschema.validators import validator_for
from referencing import Registry, Resource

from factories import FAR, FakeTask, slug, store
from servers import serving
from tcgraph.api import references
from tcgraph.api.rest.routes import ROUTES
from tcgraph.api.schema import sdl
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.store import writes

ENTRY_KEYS = {"type", "method", "route", "query", "args", "name", "stability", "title",
              "description", "input", "output"}
GROUP = slug(10**11)
BUILD = FakeTask(label="build", state="failed", runs=2, task_group_id=GROUP)
TEST = FakeTask(label="test", state="running", task_group_id=GROUP,
                dependencies=[BUILD.task_id])
LINT = FakeTask(label="lint", task_group_id=GROUP, dependencies=[BUILD.task_id])
PATH = "gecko.v2.trunk.latest.build"
ENTRIES = [(PATH, BUILD.task_id, 5, FAR), ("top", TEST.task_id, 0, FAR),
           ("gecko.v2.trunk.latest.test", TEST.task_id, 0, FAR),
           ("gecko.v2.other.build", BUILD.task_id, 0, FAR)]

# One call per method the references may describe: path arguments, and the body of a POST.
SAMPLES = {
    "ping": ({}, None),
    "listTaskGroup": ({"taskGroupId": GROUP}, None),
    "getTaskGroup": ({"taskGroupId": GROUP}, None),
    "listDependentTasks": ({"taskId": BUILD.task_id}, None),
    "listNamespaces": ({"namespace": "gecko.v2"}, None),
    "listTasks": ({"namespace": "gecko.v2.trunk.latest"}, None),
    "task": ({"taskId": BUILD.task_id}, None),
    "status": ({"taskId": TEST.task_id}, None),
    "tasks": ({}, {"taskIds": [BUILD.task_id, "unknown", TEST.task_id]}),
    "statuses": ({}, {"taskIds": [BUILD.task_id, "unknown", TEST.task_id]}),
    "findTask": ({"indexPath": PATH}, None),
    "findTasksAtIndex": ({}, {"indexes": [PATH, "top", "missing"]}),
    "mirror": ({}, None),
    "labelStatuses": ({}, {"labels": ["build", "test", "none"],
                           "filter": {"projectId": "gecko"}}),
}


@pytest.fixture
async def root(pool: asyncpg.Pool, settings: Settings, database_url: str) -> AsyncIterator[str]:
    await store(pool, [BUILD, TEST, LINT], entries=ENTRIES)
    async with pool.acquire() as conn:  # this database is a mirror too
        await writes.record_batch(conn, queue_name="queue/tester/tcgraph", started=FAR,
                                  exchange="exchange/taskcluster-queue/v1/task-completed",
                                  routing_key="primary.x", status_time=None, messages=1,
                                  errors=0)
    with serving(create_app(settings, database_url)) as url:
        yield url


def fetch(url: str) -> httpx.Response:
    response = httpx.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text)
    return response


def validator(root: str, service: str, name: str) -> jsonschema.protocols.Validator:
    """The schema an entry names, able to follow its `$ref`s to the server."""
    # Entries name schemas relative to <rootUrl>/schemas/<serviceName>/, as Taskcluster's do.
    schema = fetch(f"{root}/schemas/{service}/{name.split('#')[0]}").json()
    cls = validator_for(schema)
    cls.check_schema(schema)
    # referencing's stub hides Registry's attrs fields (retrieve=...) from mypy.
    registry: Registry[Any] = Registry(  # type: ignore[call-arg]
        retrieve=lambda uri: Resource.from_contents(fetch(uri).json()))
    return cls(schema, registry=registry)


def filled(route: str, params: dict[str, str]) -> str:
    """A reference's route with its `<name>` parts replaced by the sample's values."""
    return re.sub(r"<([^>]+)>", lambda m: params[m.group(1)], route)


def api_references(root: str) -> list[dict[str, Any]]:
    manifest = fetch(f"{root}/references/manifest.json").json()
    return [fetch(url).json() for url in manifest["references"] if url.endswith("/api.json")]


async def test_manifest_names_every_document_under_the_root_url(root: str) -> None:
    manifest = fetch(f"{root}/references/manifest.json").json()
    assert manifest == {"version": 1, "references": [
        f"{root}/references/queue/v1/api.json",
        f"{root}/references/index/v1/api.json",
        f"{root}/references/tcgraph/v1/api.json",
        f"{root}/references/tcgraph/v1/schema.graphql",
    ]}
    for url in manifest["references"]:
        document = fetch(url)
        if url.endswith(".graphql"):
            assert document.text == sdl()
            continue
        reference = document.json()
        assert reference["$schema"] == f"{root}/schemas/common/api-reference-v0.json#"
        assert reference["apiVersion"] == "v1"
        assert url == f"{root}/references/{reference['serviceName']}/v1/api.json"
        assert reference["title"] and reference["description"] and reference["entries"]
        for entry in reference["entries"]:
            # As in Taskcluster's references, only `ping` has no output schema.
            assert ENTRY_KEYS - {"input", "output"} <= set(entry) <= ENTRY_KEYS
            assert ("output" in entry) == (entry["name"] != "ping")
            assert ("input" in entry) == (entry["method"] == "post")
            assert entry["type"] == "function" and entry["stability"] in (
                "stable", "experimental", "deprecated")
            assert re.findall(r"<([^>]+)>", entry["route"]) == entry["args"]
            for name in (entry.get("input"), entry.get("output")):
                if name is not None:
                    validator(root, reference["serviceName"], name)


async def test_every_method_answers_as_its_output_schema_says(root: str) -> None:
    called = set()
    for reference in api_references(root):
        service = reference["serviceName"]
        for entry in reference["entries"]:
            params, body = SAMPLES[entry["name"]]
            route = filled(entry["route"], params)
            url = f"{root}/api/{service}/{reference['apiVersion']}{route}"
            if body is not None:
                validator(root, service, entry["input"]).validate(body)
            pages = [{}, {"limit": "1"}] if "limit" in entry["query"] else [{}]
            for query in pages:
                response = httpx.request(entry["method"].upper(), url, params=query, json=body)
                assert response.status_code == 200, (url, response.text)
                output = response.json()
                assert output, url
                if "output" in entry:
                    validator(root, service, entry["output"]).validate(output)
                if query:
                    assert "continuationToken" in output
            called.add(entry["name"])
    assert called == set(SAMPLES)


async def test_output_schemas_refuse_what_taskcluster_clients_would_choke_on(root: str) -> None:
    statuses = validator(root, "queue", "v1/tasks-statuses-response.json#")
    good = httpx.post(f"{root}/api/queue/v1/tasks/status",
                      json={"taskIds": [BUILD.task_id]}).json()
    statuses.validate(good)
    offset = copy.deepcopy(good)
    offset["statuses"][0]["status"]["expires"] = "2027-11-01T00:00:00+00:00"
    extra = copy.deepcopy(good)
    extra["statuses"][0]["status"]["label"] = "build"
    no_runs = copy.deepcopy(good)
    del no_runs["statuses"][0]["status"]["runs"]
    for bad in (offset, extra, no_runs):
        with pytest.raises(jsonschema.ValidationError):
            statuses.validate(bad)
    labels = validator(root, "tcgraph", "v1/labels-status-response.json#")
    with pytest.raises(jsonschema.ValidationError):
        labels.validate({"mapping": {"build": {"state": "completed"}}})


async def test_references_describe_exactly_the_rest_routes() -> None:
    described = {
        (entry.method.upper(),
         re.sub(r"<([^>]+)>", r"{\1}", f"/api/{service.name}/v1{entry.route}"))
        for service in references.SERVICES.values() for entry in service.entries
    }
    served = {(method, route.path.replace(":path}", "}")) for route in ROUTES
              for method in route.methods or () if method != "HEAD"}
    assert described == served


async def test_root_url_comes_from_the_settings_when_set(
        root: str, settings: Settings, database_url: str) -> None:
    public = settings.with_(root_url="https://tc.example.com/")
    with serving(create_app(public, database_url)) as url:
        manifest = fetch(f"{url}/references/manifest.json").json()
        reference = fetch(f"{url}/references/queue/v1/api.json").json()
        schema = fetch(f"{url}/schemas/queue/v1/task-status-response.json").json()
    assert manifest["references"][0] == "https://tc.example.com/references/queue/v1/api.json"
    assert reference["$schema"] == "https://tc.example.com/schemas/common/api-reference-v0.json#"
    assert schema["$id"] == "https://tc.example.com/schemas/queue/v1/task-status-response.json#"
    assert urljoin(schema["$id"], schema["properties"]["status"]["$ref"]) == (
        "https://tc.example.com/schemas/queue/v1/task-status.json")


async def test_unknown_documents_are_404s(root: str) -> None:
    for path in ("/references/nope/v1/api.json", "/schemas/queue/v1/nope.json",
                 "/schemas/nope/v1/task.json", "/references/queue/v2/api.json"):
        assert httpx.get(f"{root}{path}").status_code == 404, path
