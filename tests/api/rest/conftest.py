"""The REST tests' in-process client of an app over the test's database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from servers import asgi_client
from tcgraph.config import Settings
from tcgraph.server import create_app


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings,
                 database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, database_url), pool) as c:
        yield c
