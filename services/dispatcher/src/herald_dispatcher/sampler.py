"""Sampled gauges: what PostgreSQL and the broker hold, read every few seconds.

The outbox backlog and its oldest due row, notifications waiting for their ``send_at``, the
campaigns not finished and their recipients not fanned out yet, and every Herald queue's ready
messages and consumers (retry tiers as the channel services report them in their heartbeats:
their delays are the channel services' setting). Counts stop at ``COUNT_CAP`` so that a sample
stays cheap whatever the backlog; every query is on an index.
"""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from herald_common import control
from herald_common.channels import CHANNELS, channel_of, queue_keys
from herald_common.periodic import Periodic
from herald_common.topology import LANES, Topology

from .metrics import DispatcherMetrics

COUNT_CAP = 1_000_000
"""Counts above this are reported as this (a sample must not scan millions of rows)."""

_SAMPLE = f"""
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM notifications WHERE status = 'scheduled'
                           LIMIT {COUNT_CAP}) s) AS scheduled,
    (SELECT count(*) FROM (SELECT 1 FROM campaign_recipients WHERE notification_id IS NULL
                           LIMIT {COUNT_CAP}) r) AS recipients_waiting
"""


class MetricsSampler:
    """Two periodic samples, each on its own so that one's dependency being down (or hung)
    never freezes the other's gauges."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        connection: AbstractRobustConnection,
        topology: Topology,
        metrics: DispatcherMetrics,
        interval: float,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._topology = topology
        self._metrics = metrics
        self._retry_queues: list[str] = []
        self._sampled: set[tuple[str, str, str, str]] = set()
        self._tasks = [
            Periodic(interval, "database sample", self.sample_database),
            Periodic(interval, "queue sample", self.sample_queues),
        ]

    async def start(self, *, now: bool = False) -> None:
        for task in self._tasks:
            await task.start(now=now)

    async def stop(self) -> None:
        for task in self._tasks:
            await task.stop()

    async def sample_database(self) -> None:
        metrics = self._metrics
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(_SAMPLE)
            backlog, oldest_age = await control.outbox_lag(connection, COUNT_CAP)
            campaigns = await connection.fetch(
                """SELECT status, count(*) AS n FROM campaigns
                   WHERE finished_at IS NULL GROUP BY status"""
            )
            instances = await control.live_instances(connection)
        assert row is not None
        metrics.outbox_backlog.set(backlog)
        metrics.outbox_oldest_age.set(oldest_age or 0.0)
        metrics.scheduled.set(row["scheduled"])
        metrics.campaign_recipients_waiting.set(row["recipients_waiting"])
        by_status = {r["status"]: r["n"] for r in campaigns}
        for status in ("pending", "processing", "paused"):
            metrics.campaigns.labels(status).set(by_status.get(status, 0))
        self._retry_queues = [q for i in instances.values() for q in i.retry_queues]

    def queues(self) -> list[tuple[str, str, str, str]]:
        """(queue, channel, kind, lane) of every queue sampled."""
        topology = self._topology
        queues = [
            (topology.work_queue(key, lane), channel, "work", lane)
            for channel in CHANNELS
            for key in queue_keys(channel)
            for lane in LANES
        ]
        queues += [
            (topology.dead_letter_queue(channel), channel, "dead_letter", "")
            for channel in CHANNELS
        ]
        prefix = f"{topology.namespace}."
        queues += [
            (name, channel_of(name.removeprefix(prefix)), "retry", "")
            for name in self._retry_queues
        ]
        queues += [
            (topology.outcomes_queue, "", "outcomes", ""),
            (topology.outcomes_dead_letter_queue, "", "dead_letter", ""),
        ]
        return queues

    async def sample_queues(self) -> None:
        """Every queue's counts; a queue that is gone loses its series (a removed retry tier
        must not show its last depth for ever). When the broker does not answer, the whole
        sample fails and the gauges keep their last values (``QueuesUnreadable``, logged)."""
        queues = self.queues()
        stats = await control.queue_stats(self._connection, [q[0] for q in queues])
        sampled = set()
        for labels in queues:
            found = stats.get(labels[0])
            if found is None:
                continue
            sampled.add(labels)
            self._metrics.queue_messages.labels(*labels).set(found.messages)
            self._metrics.queue_consumers.labels(*labels).set(found.consumers)
        for labels in self._sampled - sampled:
            with contextlib.suppress(KeyError):
                self._metrics.queue_messages.remove(*labels)
                self._metrics.queue_consumers.remove(*labels)
        self._sampled = sampled
