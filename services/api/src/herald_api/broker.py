"""The API's link to RabbitMQ: connected in the background, used when it is there.

The broker may be down when the API starts or at any time after; the API accepts notifications all
the same. Publishing right after commit is only a shortcut past the dispatcher's relay, so it is
bounded: a request reserves room for its messages first (``reserve``), and when the link is down
or ``HERALD_API_MAX_PENDING_PUBLISHES`` messages are already awaiting the broker's confirm, its rows
are stored due at once and left to the relay, which is woken with a NOTIFY (``leave_to_relay``).
A slow broker then costs the API no memory: nothing piles up in tasks or in the publish batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from herald_common import control, outbox
from herald_common.amqp import Publisher, connect
from herald_common.batching import Batcher
from herald_common.topology import Topology

from .database import Database
from .deliveries import PendingMessage
from .metrics import ApiMetrics
from .nudge import RelayNudge
from .settings import ApiSettings

log = structlog.get_logger("herald_api.broker")

RETRY_INTERVAL = 1.0
"""Seconds between attempts to reach the broker."""


class BrokerLink:
    """Connection, topology and publisher; publishes committed outbox rows and deletes them."""

    def __init__(self, settings: ApiSettings, database: Database, metrics: ApiMetrics) -> None:
        self._url = settings.amqp_url.get_secret_value()
        self._confirm_timeout = settings.publish_timeout
        self._topology = Topology(settings.namespace)
        self._database = database
        self._metrics = metrics
        self._max_pending = settings.api_max_pending_publishes
        self._grace = settings.outbox_grace
        self._pending = 0
        self._nudge = RelayNudge(database)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: Publisher | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._batcher: Batcher[PendingMessage, bool] | None = None
        self._background: set[asyncio.Task[bool]] = set()
        metrics.broker_connected.set_function(lambda: 1.0 if self.connected else 0.0)
        metrics.pending_publishes.set_function(lambda: self._pending)

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
        await self._nudge.close()
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

    @property
    def topology(self) -> Topology:
        return self._topology

    async def queue_stats(self, names: Sequence[str]) -> dict[str, control.QueueStats | None]:
        """Ready messages and consumers of each queue; all None while the broker does not
        answer (the link is down, or a passive declare timed out)."""
        connection = self._connection
        if connection is None or not self.connected:
            return dict.fromkeys(names)
        try:
            return await control.queue_stats(connection, names)
        except control.QueuesUnreadable as exc:
            log.warning("cannot read the queues' counts", error=str(exc))
            return dict.fromkeys(names)

    async def tell_instances(self, command: control.ControlCommand) -> bool:
        """Send a control command to every channel-service instance; False when it could not
        be (they read the state from the database on their next heartbeat)."""
        publisher = self._publisher
        if publisher is None or not self.connected:
            return False
        try:
            await control.tell_instances(publisher, self._topology, command)
        except Exception as exc:
            log.warning("control command not published", error=repr(exc))
            return False
        return True

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

    def handoff(self, count: int) -> Handoff:
        """Decide, before a transaction stores ``count`` outbox rows, who publishes them."""
        reserved = self.reserve(count)
        return Handoff(self, count, reserved, self._grace if reserved else 0.0)

    def reserve(self, count: int) -> bool:
        """Room to publish ``count`` messages right after their commit, or False: the link is down
        or too many messages await their confirm, and the rows must be left to the relay.

        Reserved room is given back by ``publish`` / ``publish_later`` for the messages they are
        handed, and by ``release`` for those that will not be (their insert failed).
        """
        if count <= 0 or not self.connected or self._pending + count > self._max_pending:
            return False
        self._pending += count
        return True

    def release(self, count: int) -> None:
        self._pending -= count

    def leave_to_relay(self, count: int) -> None:
        """``count`` committed outbox rows, stored due at once, are the relay's to publish."""
        self._metrics.left_to_relay.inc(count)
        self._nudge.nudge()

    async def publish(self, pending: Sequence[PendingMessage]) -> list[bool]:
        """Publish reserved ``pending`` messages with their confirms in flight together, delete the
        confirmed rows, and give the reserved room back.

        Never raises for a broker or database problem: whatever is not confirmed (or whose row
        could not be deleted) stays in the outbox for the relay. True where published.
        """
        try:
            return await self._publish(pending)
        finally:
            self.release(len(pending))

    async def _publish(self, pending: Sequence[PendingMessage]) -> list[bool]:
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
        if done:
            published = [
                p.message.routing_key for p, ok in zip(pending, confirmed, strict=True) if ok
            ]
            for channel, count in outbox.by_channel(published).items():
                self._metrics.published.labels(channel).inc(count)
        try:
            async with self._database.connection() as connection:
                await outbox.delete(connection, done)
        except Exception as exc:
            # The relay publishes these rows again later; consumers absorb the duplicate.
            log.warning("could not delete published outbox rows", error=repr(exc), rows=len(done))
        return confirmed

    def publish_later(self, pending: PendingMessage) -> None:
        """Publish one reserved message in the background: the row is committed, so the reply
        need not wait for the broker's confirm. If this process dies first, the relay publishes
        the row. The reservation bounds these tasks (and the batcher's queue) in number."""
        task = asyncio.create_task(self._publish_one(pending))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_one(self, pending: PendingMessage) -> bool:
        """Publish one message, coalesced with concurrent callers into one publish-and-delete."""
        try:
            if self._batcher is None or not self.connected:
                return False
            return await self._batcher.submit(pending)
        except Exception as exc:
            log.warning("outbox publish failed", error=repr(exc))
            return False
        finally:
            self.release(1)

    async def _publish_batch(self, items: list[PendingMessage]) -> list[bool]:
        return await self._publish(items)


@dataclass
class Handoff:
    """Who publishes the outbox rows one transaction stores: the API right after commit (room
    was reserved; the rows wait ``delay``, the grace period, before the relay may take them), or
    the relay (the rows are due at once, ``delay`` 0)."""

    broker: BrokerLink
    count: int
    reserved: bool
    delay: float

    def abandon(self) -> None:
        """The transaction failed: nothing to publish."""
        if self.reserved:
            self.broker.release(self.count)
            self.reserved = False

    def committed(self, stored: Sequence[PendingMessage]) -> list[PendingMessage]:
        """The transaction committed ``stored`` (up to ``count``; an idempotent replay stores
        nothing): those the caller must now publish (``publish`` / ``publish_later``), or none
        when they are the relay's, which is woken for them."""
        if not self.reserved:
            if stored:
                self.broker.leave_to_relay(len(stored))
            return []
        self.broker.release(self.count - len(stored))
        self.reserved = False
        return list(stored)


BROKER = web.AppKey("broker", BrokerLink)
