"""Fixtures every test package shares: a real broker and database, isolated per test run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection

from herald_common.db import create_pool
from herald_common.settings import RetryPolicy
from tests.support.infra import Infra, servers
from tests.support.smtp import FakeSmtp
from tests.support.system import HeraldSystem

# Fixtures of the fake providers' servers, for the channel packages' tests (a conftest.py under
# services/channel-*/tests would share the module name "conftest" with this one for mypy).
pytest_plugins = ["tests.support.fakes.push_fixtures"]


@pytest.fixture(scope="session")
def _servers() -> Iterator[tuple[str, str]]:
    with servers() as urls:
        yield urls


@pytest.fixture(scope="session")
async def infra(_servers: tuple[str, str]) -> AsyncIterator[Infra]:
    amqp_url, database_url = _servers
    infra = Infra(amqp_url, database_url)
    await infra.prepare()
    try:
        yield infra
    finally:
        await infra.cleanup()


@pytest.fixture
async def database_url(infra: Infra) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test, dropped after it."""
    url = await infra.new_database()
    yield url
    await infra.drop_database(url)


@pytest.fixture
async def namespace(infra: Infra) -> AsyncIterator[str]:
    """A namespace of its own for one test's exchanges and queues, deleted after it.

    Deleting per test matters: every quorum queue holds file handles in the broker, and a run
    that kept hundreds of them alive could exhaust a broker started with a low ulimit.
    """
    namespace = infra.new_namespace()
    yield namespace
    await infra.delete_namespace(namespace)


@pytest.fixture
def herald_env(infra: Infra, database_url: str, namespace: str) -> dict[str, str]:
    """Environment for Herald settings and service processes of one test."""
    return infra.service_env(database_url, namespace)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    pool = await create_pool(database_url)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def amqp(infra: Infra) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(infra.amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def fake_smtp() -> Iterator[FakeSmtp]:
    smtp = FakeSmtp().start()
    try:
        yield smtp
    finally:
        smtp.stop()


@pytest.fixture
def system_factory(
    herald_env: dict[str, str], fake_smtp: FakeSmtp, tmp_path: Path, infra: Infra
) -> Iterator[Callable[..., HeraldSystem]]:
    """Builds the whole system (not started) around the test's fake SMTP server."""
    built: list[HeraldSystem] = []

    def build(
        *, email_replicas: int = 2, sms_replicas: int = 0, push_replicas: int = 0, **overrides: str
    ) -> HeraldSystem:
        # Every tier any channel may declare, so that the test's cleanup deletes it.
        for variable in (
            "HERALD_RETRY_DELAYS",
            "HERALD_EMAIL_RETRY_DELAYS",
            "HERALD_SMS_RETRY_DELAYS",
            "HERALD_PUSH_RETRY_DELAYS",
        ):
            delays = overrides.get(variable, "1,5,30,120,600")
            infra.uses_retry_policy(
                herald_env["HERALD_NAMESPACE"],
                RetryPolicy(
                    delays=tuple(float(d) for d in delays.split(",")),
                    max_attempts=1,
                    jitter=float(overrides.get("HERALD_RETRY_JITTER", "0.2")),
                ),
            )
        system = HeraldSystem.build(
            herald_env,
            fake_smtp,
            tmp_path,
            email_replicas=email_replicas,
            sms_replicas=sms_replicas,
            push_replicas=push_replicas,
            **overrides,
        )
        built.append(system)
        return system

    yield build
    for system in built:
        for service in system.services.values():
            service.kill()


@pytest.fixture
async def system(system_factory: Callable[..., HeraldSystem]) -> AsyncIterator[HeraldSystem]:
    """The whole system, started, with default settings."""
    herald = system_factory()
    await herald.start()
    try:
        yield herald
    finally:
        await herald.stop()
