"""GraphiQL at /graphql: served whole by tcgraph, and working in a real browser."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import httpx
import pytest

from factories import FAR, FakeTask, store
from needs import CHROMIUM
from servers import serving
from tcgraph.api import graphiql
from tcgraph.config import Settings
from tcgraph.server import create_app

# As the machine notes advise: without the background-networking flags,
# Chromium tries to reach Google's hosts at every start.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_the_shipped_files_are_the_pinned_npm_builds() -> None:
    # scripts/vendor-graphiql checked each tarball's sha512 against the lock
    # file and recorded each file's sha256: the shipped files must be those,
    # from the versions and integrities package-lock.json pins now.
    lock = json.loads((REPO / "package-lock.json").read_text())["packages"]
    sources = json.loads((graphiql.STATIC_DIR / "SOURCES.json").read_text())
    for name, source in sources["packages"].items():
        pinned = lock[f"node_modules/{name}"]
        assert (source["version"], source["integrity"]) == (
            pinned["version"], pinned["integrity"]), f"{name}: run scripts/vendor-graphiql"
    shipped = {p.name for p in graphiql.STATIC_DIR.iterdir()} - {"SOURCES.json"}
    assert shipped == set(sources["files"])
    assert set(graphiql.ASSETS) <= shipped
    for name, source in sources["files"].items():
        assert source["package"] in sources["packages"]
        data = (graphiql.STATIC_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == source["sha256"], name


async def test_the_page_loads_only_files_served_here(settings: Settings, database_url: str) -> None:
    with serving(create_app(settings, database_url)) as url, httpx.Client(base_url=url) as http:
        page = http.get("/graphql", headers=HTML)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        references = re.findall(r'(?:src|href)="([^"]*)"', page.text)
        assert sorted(references) == sorted(
            ["data:,"] + [f"{graphiql.STATIC_PATH}/{name}" for name in graphiql.ASSETS])
        assert "//" not in page.text.replace("http://www.w3.org", "")
        for name in graphiql.ASSETS:
            asset = http.get(f"{graphiql.STATIC_PATH}/{name}")
            assert asset.status_code == 200, name
            assert asset.content == (graphiql.STATIC_DIR / name).read_bytes()
        assert http.get(f"{graphiql.STATIC_PATH}/no-such-file.js").status_code == 404


async def test_missing_files_give_a_coded_answer_that_says_how_to_fetch_them(
        settings: Settings, database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphiql, "STATIC_DIR", tmp_path / "not-fetched")
    with serving(create_app(settings, database_url)) as url, httpx.Client(base_url=url) as http:
        page = http.get("/graphql", headers=HTML)
        asset = http.get(f"{graphiql.STATIC_PATH}/graphiql.min.js")
        query = http.post("/graphql", json={"query": "{ task(taskId: \"x\") { taskId } }"})
    # Not a 503 (the endpoint works), and a coded GraphQL error body like every other refusal.
    assert page.status_code == 404
    assert page.headers["content-type"] == "application/json"
    (error,) = page.json()["errors"]
    assert error["extensions"] == {"code": "GRAPHIQL_NOT_INSTALLED",
                                   "missing": list(graphiql.ASSETS)}
    assert "scripts/vendor-graphiql" in error["message"]
    assert "<script" not in page.text and "https://" not in page.text  # no CDN fallback
    assert asset.status_code == 404
    assert query.json()["data"] == {"task": None}


async def test_the_ide_can_be_turned_off(settings: Settings, database_url: str) -> None:
    with serving(create_app(settings.with_(graphiql=False), database_url)) as url, \
            httpx.Client(base_url=url) as http:
        page = http.get("/graphql", headers=HTML)
        asset = http.get(f"{graphiql.STATIC_PATH}/graphiql.min.js")
        query = http.post("/graphql", json={"query": "{ task(taskId: \"x\") { taskId } }"})
    assert page.status_code == 404
    assert "GraphiQL" not in page.text
    assert asset.status_code == 404
    assert query.json()["data"] == {"task": None}


@pytest.mark.needs("chromium")
async def test_graphiql_runs_queries_in_chromium(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    running = FakeTask(label="build-linux64/opt", state="running")
    indexed = FakeTask(label="test-linux64/opt", state="completed")
    await store(pool, [running, indexed],
                [("gecko.v2.trunk.latest.test", indexed.task_id, 1.0, FAR)])

    with serving(create_app(settings, database_url)) as url:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                requested: list[str] = []
                crashes: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                page.on("pageerror", lambda error: crashes.append(str(error)))

                # A query shared in the address (?q=) is in the editor, ready to run.
                first = f'{{ status(taskId: "{running.task_id}") {{ taskId state }} }}'
                await page.goto(f"{url}/graphql?q={quote(first)}")
                run = page.locator(".graphiql-execute-button")
                result = page.locator(".graphiql-response")
                await run.click()
                await expect(result).to_contain_text(running.task_id, timeout=15_000)
                await expect(result).to_contain_text("RUNNING")

                # A query typed into the editor.
                second = ('{\n  indexedTask(indexPath: "gecko.v2.trunk.latest.test") {\n'
                          '    taskId\n    task { label status { state expires } }\n  }\n}\n')
                await page.locator(".graphiql-query-editor .CodeMirror").click()
                await page.keyboard.press("Control+A")
                await page.keyboard.insert_text(second)
                await run.click()
                await expect(result).to_contain_text(indexed.task_id, timeout=15_000)
                await expect(result).to_contain_text("test-linux64/opt")
                assert running.task_id not in await result.inner_text()

                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "graphiql.png"))
            finally:
                await browser.close()

    assert crashes == []
    origin = urlsplit(url)
    foreign = [u for u in requested
               if not u.startswith("data:") and urlsplit(u)[:2] != origin[:2]]
    assert foreign == []
    loaded = {urlsplit(u).path for u in requested}
    assert {f"{graphiql.STATIC_PATH}/{name}" for name in graphiql.ASSETS} <= loaded
