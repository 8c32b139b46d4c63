"""The live task-group page (api/live.py) and GraphiQL's subscriptions, in a real headless
Chromium: the page follows a replayed deployment to its final counts, stays in step with
10,000 tasks, and GraphiQL shows a subscription's events."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from api.test_graphiql import ARTIFACTS, CHROMIUM_ARGS
from needs import CHROMIUM
from ingest.conftest import (  # noqa: F401  (fixtures)
    broker, follow_options, following, prepare_queue, reached, recording, upstream,
)
from factories import FakeTask, store
from servers import serving
from services.rabbitmq import RabbitMQ
from services.replay import Recording, declare_exchanges, publish, sentinel
from tcgraph.config import Settings
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.server import create_app
from waiting import eventually_async

STATES = ("unscheduled", "pending", "running", "completed", "failed", "exception")


async def expect_counts(page: Any, counts: dict[str, int], timeout_ms: int = 60_000) -> None:
    """Wait until the page's counts are `counts` (every state; `all` their sum)."""
    from playwright.async_api import expect

    for state in STATES:
        await expect(page.locator(f'#counts [data-state="{state}"] .n')).to_have_text(
            str(counts.get(state, 0)), timeout=timeout_ms)
    await expect(page.locator('#counts [data-state="all"] .n')).to_have_text(
        str(sum(counts.values())), timeout=timeout_ms)


async def group_counts(pool: asyncpg.Pool, group: str) -> dict[str, int]:
    rows = await pool.fetch("SELECT state FROM tasks WHERE task_group_id = $1", group)
    return dict(Counter(r["state"] for r in rows))


@pytest.mark.needs("chromium")
async def test_the_page_follows_a_replayed_deployment_to_its_final_counts(
        database_url: str, settings: Settings, broker: RabbitMQ, upstream: str,
        recording: Recording) -> None:
    from playwright.async_api import async_playwright

    groups = Counter(s["status"]["taskGroupId"] for s in recording.statuses.values())
    group = groups.most_common(1)[0][0]
    await declare_exchanges(broker.url, [EXCHANGE_PREFIX + name for name in EXCHANGES])
    options = follow_options(broker.url, upstream)
    await prepare_queue(options)
    marker = sentinel(1)
    with serving(create_app(settings, database_url)) as url:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                crashes: list[str] = []
                requested: list[str] = []
                page.on("pageerror", lambda error: crashes.append(str(error)))
                page.on("request", lambda request: requested.append(request.url))
                # Open before the first message: the group is empty, the feed live.
                await page.goto(f"{url}/task-group/{group}")
                await page.wait_for_function("window.tcgraphLive !== undefined")
                async with following(database_url, options) as pool:
                    await publish(broker.url, [*recording.messages, marker])
                    await eventually_async(lambda: reached(pool, marker),
                                           what="the sentinel's batch")
                    final = await group_counts(pool, group)
                    assert sum(final.values()) == groups[group]
                    await expect_counts(page, final)
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "live-task-group.png"))
            finally:
                await browser.close()
    assert crashes == []
    origin = urlsplit(url)
    assert [u for u in requested if not u.startswith("data:")
            and urlsplit(u)[:2] != origin[:2]] == []


@pytest.mark.needs("chromium")
async def test_the_page_keeps_up_with_ten_thousand_tasks(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    from playwright.async_api import async_playwright

    tasks = [FakeTask(task_group_id="big", state="pending") for _ in range(10_000)]
    for start in range(0, len(tasks), 2_000):
        await store(pool, tasks[start:start + 2_000])
    with serving(create_app(settings, database_url)) as url:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                started = time.monotonic()
                await page.goto(f"{url}/task-group/big")
                await expect_counts(page, {"pending": 10_000})
                opened = time.monotonic() - started
                # Every task changes in one commit: one burst of 10,000 changes.
                started = time.monotonic()
                await store(pool, [FakeTask(task_id=t.task_id, task_group_id="big",
                                            state="running") for t in tasks])
                await expect_counts(page, {"running": 10_000})
                burst = time.monotonic() - started
                # Still responsive: a script round trip right after the burst is prompt,
                # and the table holds one row per task, updated in place.
                started = time.monotonic()
                assert await page.evaluate("document.querySelectorAll('#tasks tr').length") \
                    == 10_000
                round_trip = time.monotonic() - started
            finally:
                await browser.close()
    print(f"10,000 tasks: snapshot shown in {opened:.1f} s, a 10,000-task burst in "
          f"{burst:.1f} s, a round trip after it {round_trip * 1000:.0f} ms")


@pytest.mark.needs("chromium")
async def test_graphiql_shows_a_subscriptions_events(
        database_url: str, settings: Settings, pool: asyncpg.Pool) -> None:
    from playwright.async_api import async_playwright, expect

    watched = FakeTask(task_group_id="g", state="pending")
    await store(pool, [watched])
    document = ('subscription { taskGroupChanges(taskGroupId: "g") '
                '{ cursor taskId task { status { state } } } }')
    with serving(create_app(settings, database_url)) as url:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                crashes: list[str] = []
                page.on("pageerror", lambda error: crashes.append(str(error)))
                await page.goto(f"{url}/graphql?q={quote(document)}")
                await page.locator(".graphiql-execute-button").click()
                result = page.locator(".graphiql-response")
                await expect(result).to_contain_text(watched.task_id, timeout=30_000)
                await expect(result).to_contain_text("PENDING")
                await store(pool, [FakeTask(task_id=watched.task_id, task_group_id="g",
                                            state="completed")])
                await expect(result).to_contain_text("COMPLETED", timeout=30_000)
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "graphiql-subscription.png"))
            finally:
                await browser.close()
    assert crashes == []
