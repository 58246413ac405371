"""Fixtures of the API tests: the app on a test server against the real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from aiohttp.test_utils import TestClient, TestServer

from herald_api.app import create_app
from herald_api.settings import ApiSettings
from herald_common.topology import Topology
from services.api.tests.support import (
    ADMIN_SECRET,
    Client,
    ClientFactory,
    WorkQueue,
    bearer,
    wait_ready,
)


@pytest.fixture
async def make_client(herald_env: dict[str, str]) -> AsyncIterator[ClientFactory]:
    """Start an API (settings overridable) on a test server; waits until ready unless told not.

    Its bootstrap key is ``ADMIN_SECRET`` (every scope, project ``default``), and the client
    sends it on every request unless given another secret, or None for no key at all.
    """
    clients: list[Client] = []

    async def make(
        *, ready: bool = True, secret: str | None = ADMIN_SECRET, **overrides: Any
    ) -> Client:
        settings = ApiSettings(
            **{
                "amqp_url": herald_env["HERALD_AMQP_URL"],
                "database_url": herald_env["HERALD_DATABASE_URL"],
                "namespace": herald_env["HERALD_NAMESPACE"],
                "db_pool_min": 1,
                "db_pool_max": 5,
                "api_bootstrap_key": ADMIN_SECRET,
                **overrides,
            }
        )
        client: Client = TestClient(
            TestServer(create_app(settings)), headers=bearer(secret) if secret else None
        )
        await client.start_server()
        clients.append(client)
        if ready:
            await wait_ready(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> Client:
    return await make_client()


@pytest.fixture
def work_queue(amqp: AbstractRobustConnection, namespace: str) -> WorkQueue:
    return WorkQueue(amqp, Topology(namespace).work_queue("email"))
