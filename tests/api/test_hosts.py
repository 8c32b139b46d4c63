"""The `Host` header: only the allowed names are answered, so no URL names a client's host."""

from __future__ import annotations

import httpx

from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app


def get(url: str, path: str, host: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"host": host}, timeout=30)


async def test_a_foreign_host_is_refused_with_a_coded_error_everywhere(
        database_url: str) -> None:
    defaults = Settings(database_url=database_url)
    with serving(create_app(defaults, database_url)) as url:
        manifest = get(url, "/references/manifest.json", "evil.example")
        graphql = httpx.post(f"{url}/graphql", json={"query": "{ __typename }"},
                             headers={"host": "evil.example:8000"}, timeout=30)
        rest = get(url, "/api/queue/v1/task/x/status", "evil.example")
        local = get(url, "/references/manifest.json", "localhost:1234")
        live = get(url, "/health/live", "10.9.8.7:8000")
        ready = get(url, "/health/ready", "10.9.8.7")
    assert manifest.status_code == 400
    (error,) = graphql.json()["errors"]
    assert graphql.status_code == 400
    assert error["extensions"] == {"code": "HOST_NOT_ALLOWED", "host": "evil.example:8000"}
    assert "allowed_hosts" in error["message"]
    assert manifest.json()["errors"][0]["extensions"]["code"] == "HOST_NOT_ALLOWED"
    assert rest.status_code == 400 and rest.json()["code"] == "InputError"
    assert "allowed_hosts" in rest.json()["message"]
    # This machine's own names are served, and URLs name the host asked for.
    assert local.status_code == 200
    assert local.json()["references"][0].startswith("http://localhost:1234/references/")
    # Probes name the instance by address: health answers any Host (it builds no URL).
    assert live.status_code == 200 and ready.status_code == 200


async def test_allowed_hosts_are_configurable(settings: Settings, database_url: str) -> None:
    configured = settings.with_(allowed_hosts="tc.example.com, *.internal.example")
    with serving(create_app(configured, database_url)) as url:
        exact = get(url, "/references/manifest.json", "tc.example.com")
        wildcard = get(url, "/references/manifest.json", "a.b.internal.example:443")
        local = get(url, "/references/manifest.json", "127.0.0.1")
    assert exact.status_code == 200
    assert exact.json()["references"][0].startswith("http://tc.example.com/references/")
    assert wildcard.status_code == 200
    assert local.status_code == 400  # the list replaces the default


async def test_with_a_root_url_the_references_never_name_the_request_host(
        database_url: str) -> None:
    public = Settings(database_url=database_url, root_url="https://tc.example.com/")
    with serving(create_app(public, database_url)) as url:
        via_root = get(url, "/references/manifest.json", "tc.example.com")
        evil = get(url, "/references/manifest.json", "evil.example")
    assert via_root.json()["references"][0].startswith("https://tc.example.com/")
    assert evil.status_code == 400
