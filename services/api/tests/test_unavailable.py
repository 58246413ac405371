"""When PostgreSQL cannot serve a request: 503 with ``Retry-After``, never a 500 or a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from herald_api.app import POOL
from services.api.tests.support import Client, ClientFactory, count, email
from tests.support.infra import Infra


async def _assert_503(client: Client, retry_after: str) -> None:
    async with asyncio.timeout(10):  # a request must not wait for the database without end
        listed = await client.get("/v1/notifications")
        posted = await client.post("/v1/notifications", json=email())
        batch = await client.post("/v1/notifications/batch", json={"notifications": [email()]})
    for response in (listed, posted, batch):
        assert response.status == 503, await response.text()
        assert response.content_type == "application/problem+json"
        assert response.headers["Retry-After"] == retry_after
        assert (await response.json())["status"] == 503


async def test_no_free_connection_in_time_is_503(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(db_pool_min=1, db_pool_max=1, api_db_acquire_timeout=0.2)
    async with client.app[POOL].acquire():  # the API's only connection, held
        await _assert_503(client, retry_after="1")
        assert (await client.get("/readyz")).status == 503
    assert (await client.get("/v1/notifications")).status == 200
    assert await count(pool, "notifications") == 0


@asynccontextmanager
async def database_down(infra: Infra, database_url: str) -> AsyncIterator[None]:
    """The test's database refuses connections and drops those it has, as in a restart."""
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_a_database_outage_is_503(
    make_client: ClientFactory, infra: Infra, database_url: str, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client()
    async with database_down(infra, database_url):
        await _assert_503(client, retry_after="5")
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["database"] != "ok"
    assert (await client.get("/v1/notifications")).status == 200
    assert await count(pool, "notifications") == 0
