"""Real RabbitMQ and PostgreSQL for tests, isolated per run.

Testcontainers starts them where a Docker engine answers; otherwise the servers on this machine
are used (``HERALD_TEST_AMQP_URL`` / ``HERALD_TEST_DATABASE_URL`` override the defaults). Every
run gets its own namespace and databases and removes them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg

from herald_common.migrate import apply_migrations
from herald_common.settings import CHANNELS, RetryPolicy
from herald_common.topology import Topology

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """(amqp_url, admin database url) of a real broker and database server."""
    amqp = os.environ.get("HERALD_TEST_AMQP_URL")
    database = os.environ.get("HERALD_TEST_DATABASE_URL")
    if amqp and database:
        yield amqp, database
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        with (
            RabbitMqContainer("rabbitmq:3.13-management") as rabbit,
            PostgresContainer("postgres:16", driver=None) as postgres,
        ):
            host = rabbit.get_container_host_ip()
            port = rabbit.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/", postgres.get_connection_url()
        return
    yield amqp or DEFAULT_AMQP_URL, database or DEFAULT_DATABASE_URL


def _with_database(url: str, name: str) -> str:
    base = url.rsplit("/", 1)[0]
    return f"{base}/{name}"


@dataclass
class Infra:
    """The servers of one test run, and the isolated namespaces and databases made on them."""

    amqp_url: str
    admin_database_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    template: str = ""
    databases: list[str] = field(default_factory=list)
    database_count: int = 0
    namespaces: dict[str, set[RetryPolicy]] = field(default_factory=dict)
    namespace_count: int = 0

    async def prepare(self) -> None:
        self.template = f"herald_t{self.run_id}_template"
        admin = await asyncpg.connect(self.admin_database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await admin.close()
        connection = await asyncpg.connect(_with_database(self.admin_database_url, self.template))
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()

    async def new_database(self, *, migrated: bool = True) -> str:
        """A fresh database, migrated (a copy of the run's template) or empty; returns its URL."""
        self.database_count += 1
        name = f"herald_t{self.run_id}_{self.database_count}"
        template = f' TEMPLATE "{self.template}"' if migrated else ""
        admin = await asyncpg.connect(self.admin_database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"{template}')
        finally:
            await admin.close()
        self.databases.append(name)
        return _with_database(self.admin_database_url, name)

    def service_env(self, database_url: str, namespace: str) -> dict[str, str]:
        """The environment that points Herald's settings and service processes at this run's
        broker, one of its databases and one of its namespaces."""
        return {
            "HERALD_AMQP_URL": self.amqp_url,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_NAMESPACE": namespace,
        }

    def new_namespace(self) -> str:
        self.namespace_count += 1
        namespace = f"test-{self.run_id}-{self.namespace_count}"
        self.namespaces[namespace] = set()
        return namespace

    def uses_retry_policy(self, namespace: str, policy: RetryPolicy) -> None:
        """Remember tier queues a test declares so that cleanup removes them."""
        self.namespaces[namespace].add(policy)

    async def delete_namespace(self, namespace: str, *, sweep: bool = False) -> None:
        """Delete a namespace's queues and exchanges (``sweep``: also any the broker lists)."""
        topology = Topology(namespace)
        names = set(topology.queue_names())
        for policy in self.namespaces.pop(namespace, set()):
            names |= set(topology.queue_names({c: policy for c in CHANNELS}))
        if sweep:
            names |= _listed_queues(f"{namespace}.")
        await delete_queues(self.amqp_url, names, exchanges=topology.exchange_names())

    async def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(self.admin_database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    async def cleanup(self) -> None:
        """Remove whatever the run's tests left behind, and the template database."""
        for namespace in list(self.namespaces):
            await self.delete_namespace(namespace)
        await delete_queues(self.amqp_url, _listed_queues(f"test-{self.run_id}-"))
        admin = await asyncpg.connect(self.admin_database_url)
        try:
            for name in [*self.databases, self.template]:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def delete_queues(
    amqp_url: str, queues: Iterable[str], *, exchanges: Iterable[str] = ()
) -> int:
    """Delete queues and exchanges, each on a channel of its own (a failure closes a channel)."""
    queues, exchanges = list(queues), list(exchanges)
    if not queues and not exchanges:
        return 0
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in queues:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
        channel = await connection.channel()
        for exchange in exchanges:
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    return len(queues)


def _listed_queues(namespace: str) -> set[str]:
    """Queues of ``namespace`` the local broker knows (catches tiers a test did not register)."""
    if shutil.which("rabbitmqctl") is None:
        return set()
    try:
        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in out.splitlines() if line.startswith(namespace)}


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Ready messages in ``queue`` (passive declare on a throwaway channel)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared: Any = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)
    finally:
        await connection.close()
