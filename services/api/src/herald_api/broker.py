"""The API's link to RabbitMQ: connected in the background, used when it is there.

The broker may be down when the API starts or at any time after; the API accepts notifications all
the same. Until the link is up, committed outbox rows are simply left for the dispatcher's relay,
which publishes them once their grace period has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from herald_common import outbox
from herald_common.amqp import Publisher, connect
from herald_common.batching import Batcher
from herald_common.topology import Topology

from .deliveries import PendingMessage
from .metrics import ApiMetrics
from .settings import ApiSettings

log = structlog.get_logger("herald_api.broker")

RETRY_INTERVAL = 1.0
"""Seconds between attempts to reach the broker."""


class BrokerLink:
    """Connection, topology and publisher; publishes committed outbox rows and deletes them."""

    def __init__(self, settings: ApiSettings, pool: asyncpg.Pool[Any], metrics: ApiMetrics) -> None:
        self._url = settings.amqp_url.get_secret_value()
        self._confirm_timeout = settings.publish_timeout
        self._topology = Topology(settings.namespace)
        self._pool = pool
        self._metrics = metrics
        self._connection: AbstractRobustConnection | None = None
        self._publisher: Publisher | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._batcher: Batcher[PendingMessage, bool] | None = None
        self._background: set[asyncio.Task[bool]] = set()
        metrics.broker_connected.set_function(lambda: 1.0 if self.connected else 0.0)

    @property
    def connected(self) -> bool:
        """True while the connection is up and the topology declared (publishing can work)."""
        connection = self._connection
        return (
            self._publisher is not None
            and connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
        )

    def start(self) -> None:
        """Start connecting in the background (retrying every second) and the publish batcher."""
        self._batcher = Batcher(self._publish_batch, max_size=500, concurrency=2)
        self._connecting = asyncio.create_task(self._connect_until_up(), name="broker-connect")

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._background:
            await asyncio.wait(set(self._background), timeout=self._confirm_timeout)
        if self._batcher is not None:
            await self._batcher.close()
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._publisher = self._connection = None

    async def check(self) -> None:
        """Readiness: raises unless the broker link is up."""
        if not self.connected:
            raise ConnectionError("not connected to the broker")

    async def _connect_until_up(self) -> None:
        failures = 0
        while True:
            connection: AbstractRobustConnection | None = None
            try:
                connection = await connect(self._url, "herald-api")
                channel = await connection.channel()
                await self._topology.declare(channel)
                await channel.close()
                publisher = await Publisher.open(connection, self._confirm_timeout)
            except Exception as exc:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
                if failures % 30 == 0:
                    log.warning(
                        "broker unavailable; notifications stay in the outbox for the relay",
                        error=repr(exc),
                        attempts=failures + 1,
                    )
                failures += 1
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            self._connection, self._publisher = connection, publisher
            log.info("connected to the broker", namespace=self._topology.namespace)
            return

    async def publish(self, pending: Sequence[PendingMessage]) -> list[bool]:
        """Publish ``pending`` with their confirms in flight together; delete the confirmed rows.

        Never raises for a broker or database problem: whatever is not confirmed (or whose row
        could not be deleted) stays in the outbox for the relay. True where published.
        """
        if not pending:
            return []
        publisher = self._publisher
        if publisher is None or not self.connected:
            return [False] * len(pending)
        try:
            confirmed = await outbox.publish(
                publisher,
                self._topology.notifications_exchange,
                [p.message for p in pending],
            )
        except Exception as exc:
            log.warning("outbox publish failed", error=repr(exc), messages=len(pending))
            confirmed = [False] * len(pending)
        failed = confirmed.count(False)
        if failed:
            self._metrics.publish_failures.inc(failed)
            log.warning("messages left in the outbox for the relay", unconfirmed=failed)
        done = [p.outbox_id for p, ok in zip(pending, confirmed, strict=True) if ok]
        try:
            await outbox.delete(self._pool, done)
        except Exception as exc:
            # The relay publishes these rows again later; consumers absorb the duplicate.
            log.warning("could not delete published outbox rows", error=repr(exc), rows=len(done))
        return confirmed

    def publish_later(self, pending: PendingMessage) -> None:
        """Publish in the background: the row is committed, so the reply need not wait for the
        broker's confirm. If this process dies first, the relay publishes the row."""
        task = asyncio.create_task(self.publish_one(pending))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def publish_one(self, pending: PendingMessage) -> bool:
        """Publish one message, coalesced with concurrent callers into one publish-and-delete."""
        if self._batcher is None or not self.connected:
            return False
        try:
            return await self._batcher.submit(pending)
        except Exception as exc:
            log.warning("outbox publish failed", error=repr(exc))
            return False

    async def _publish_batch(self, items: list[PendingMessage]) -> list[bool]:
        return await self.publish(items)


BROKER = web.AppKey("broker", BrokerLink)
