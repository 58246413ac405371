"""What every service process does around its own work: start-up, readiness, signals, shutdown.

A service's ``main`` builds its settings, configures logging and calls ``run_service`` with an
async function that receives the shared resources (pool, broker connection, metrics registry) and
returns the service's stop function once it is running. SIGTERM and SIGINT stop it gracefully.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from .amqp import connect
from .backoff import Backoff
from .db import create_pool
from .metrics import service_registry
from .ops import ReadinessCheck, start_ops_server
from .settings import CommonSettings
from .topology import Topology
from .tracing import configure_tracing

log = structlog.get_logger("herald.service")
T = TypeVar("T")


@dataclass(frozen=True)
class Resources:
    settings: CommonSettings
    pool: asyncpg.Pool[Any]
    connection: AbstractRobustConnection
    registry: CollectorRegistry
    topology: Topology


Stop = Callable[[], Awaitable[None]]
Start = Callable[[Resources], Awaitable[Stop]]


async def retry_until_ready(
    what: str, attempt: Callable[[], Awaitable[T]], stopping: asyncio.Event
) -> T | None:
    """Call ``attempt`` until it succeeds (a dependency still starting), or until stopped."""
    backoff = Backoff(first=0.5, cap=5.0)
    while not stopping.is_set():
        try:
            return await attempt()
        except Exception as exc:  # aio-pika raises its own connection errors, too
            log.warning(
                "waiting for a dependency", dependency=what, error=repr(exc), retry_in=backoff.delay
            )
        await backoff.wait(stopping)
    return None


def _readiness(pool: asyncpg.Pool[Any], connection: AbstractRobustConnection) -> dict[str, Any]:
    async def database() -> None:
        await pool.fetchval("SELECT 1")

    async def broker() -> None:
        if connection.is_closed or not connection.connected.is_set():
            raise ConnectionError("broker connection is down")

    checks: dict[str, ReadinessCheck] = {"database": database, "broker": broker}
    return checks


async def serve(
    name: str, settings: CommonSettings, http_host: str, http_port: int, start: Start
) -> None:
    """Connect, start the service, serve ops HTTP, and run until SIGTERM or SIGINT."""
    shutdown_tracing = configure_tracing(f"herald-{name}")  # None unless OTEL_* asks for it
    try:
        await _serve(name, settings, http_host, http_port, start)
    finally:
        if shutdown_tracing is not None:
            await shutdown_tracing()


async def _serve(
    name: str, settings: CommonSettings, http_host: str, http_port: int, start: Start
) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    pool = await retry_until_ready(
        "postgresql",
        lambda: create_pool(
            settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            statement_cache_size=settings.db_statement_cache_size,
        ),
        stopping,
    )
    if pool is None:
        return
    connection = await retry_until_ready(
        "rabbitmq", lambda: connect(settings.amqp_url.get_secret_value(), name), stopping
    )
    if connection is None:
        await pool.close()
        return
    topology = Topology(settings.namespace)

    async def redeclare(*_: Any) -> None:
        # A broker that lost its definitions (new node, wiped volume) gets them back.
        channel = await connection.channel()
        await topology.declare(channel)
        await channel.close()
        log.info("reconnected to the broker; topology declared")

    connection.reconnect_callbacks.add(redeclare)
    registry = service_registry(name)
    resources = Resources(settings, pool, connection, registry, topology)
    started = asyncio.Event()

    async def service_started() -> None:
        if not started.is_set():
            raise ConnectionError("still starting")

    checks = {**_readiness(pool, connection), "service": service_started}
    runner = await start_ops_server(registry, checks, http_host, http_port)
    # A broker that goes away while the service declares its queues fails the start; try again
    # (it is all idempotent declarations) rather than exit.
    stop = await retry_until_ready("startup", lambda: start(resources), stopping)
    if stop is None:
        await runner.cleanup()
        await connection.close()
        await pool.close()
        return
    started.set()
    log.info("started", http_port=http_port)
    try:
        await stopping.wait()
    finally:
        log.info("stopping")
        await stop()
        await runner.cleanup()
        await connection.close()
        await pool.close()
        log.info("stopped")
