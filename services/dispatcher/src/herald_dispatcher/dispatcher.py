"""The dispatcher's parts, started and stopped together: the consumers, the outbox relay and the
watch on the parked queue, on one publisher."""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common.amqp import Publisher
from herald_common.tallies import MinuteTally
from herald_common.topology import Topology

from .campaigns import CampaignRunner
from .consumers import Consumers
from .metrics import DispatcherMetrics
from .parked import ParkedWatch
from .relay import OutboxRelay
from .retention import Retention
from .sampler import MetricsSampler
from .settings import DispatcherSettings


class Dispatcher:
    """Built once per process (its metrics are registered once); ``start`` may be retried."""

    def __init__(
        self,
        settings: DispatcherSettings,
        *,
        pool: asyncpg.Pool[Any],
        connection: AbstractRobustConnection,
        topology: Topology,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._connection = connection
        self._topology = topology
        self.metrics = DispatcherMetrics.create(registry)
        self.tally = MinuteTally(pool, prune=True)
        self._publisher: Publisher | None = None
        self._outbox_publisher: Publisher | None = None
        self._consumers: Consumers | None = None
        self._relay: OutboxRelay | None = None
        self._watch: ParkedWatch | None = None
        self._campaigns: CampaignRunner | None = None
        self._sampler: MetricsSampler | None = None
        self._retention: Retention | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A broker that drops during the start fails it, and the service retries: leave no
            # channel, publisher, consumer or task behind.
            await self._release()
            raise

    async def _start(self) -> None:
        settings, topology = self._settings, self._topology
        channel = await self._connection.channel()
        try:
            await topology.declare(channel)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        self._publisher = await Publisher.open(self._connection, settings.publish_timeout)
        # The outbox's publishes (relay, campaign chunks) on a channel of their own: their
        # check of ids in flight (publish_many) then sees every publish of a notification's
        # message on it, which the consumers' own publishes would bypass.
        self._outbox_publisher = await Publisher.open(self._connection, settings.publish_timeout)
        self._consumers = Consumers(
            self._connection,
            self._pool,
            self._publisher,
            topology,
            prefetch=settings.outcome_prefetch,
            metrics=self.metrics,
            tally=self.tally,
        )
        await self._consumers.start()
        self._relay = OutboxRelay(
            self._pool,
            self._outbox_publisher,
            topology.notifications_exchange,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval,
            metrics=self.metrics,
        )
        await self._relay.start()
        self._campaigns = CampaignRunner(
            self._pool,
            self._outbox_publisher,
            topology.notifications_exchange,
            chunk_size=settings.campaign_chunk_size,
            poll_interval=settings.campaign_poll_interval,
            metrics=self.metrics,
            tally=self.tally,
        )
        await self._campaigns.start()
        self._watch = ParkedWatch(
            self._connection,
            topology.parked_queue,
            self.metrics.parked_messages,
            settings.parked_check_interval,
        )
        await self._watch.start(now=True)
        self._sampler = MetricsSampler(
            self._pool,
            self._connection,
            topology,
            self.metrics,
            settings.metrics_sample_interval,
        )
        await self._sampler.start(now=True)
        self._retention = Retention(
            self._pool,
            self.metrics,
            retention_days=settings.retention_days,
            redact_after_days=settings.redact_after_days,
            batch_size=settings.retention_batch_size,
            interval=settings.retention_interval,
        )
        await self._retention.start(now=True)
        await self.tally.start()

    async def stop(self) -> None:
        await self._release()

    async def _release(self) -> None:
        # Producers of work first (relay, consumers), then the publisher they share.
        if self._retention is not None:
            await self._retention.stop()
        if self._sampler is not None:
            await self._sampler.stop()
        if self._watch is not None:
            await self._watch.stop()
        if self._campaigns is not None:
            await self._campaigns.stop()
        if self._relay is not None:
            await self._relay.stop()
        if self._consumers is not None:
            await self._consumers.stop()
        await self.tally.stop()  # after what counts into it
        for publisher in (self._publisher, self._outbox_publisher):
            if publisher is not None:
                with contextlib.suppress(Exception):
                    await publisher.close()
        self._watch = self._relay = None
        self._sampler = None
        self._retention = None
        self._campaigns = None
        self._consumers = None
        self._publisher = self._outbox_publisher = None
