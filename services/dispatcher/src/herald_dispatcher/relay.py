"""The outbox relay: publishes outbox rows that are due, woken by NOTIFY or a poll.

Each pass takes the due rows (``outbox.relay_due``), publishes them and deletes the confirmed
ones; a row that failed waits a backoff of its own, so it never blocks the rows behind it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from herald_common import outbox
from herald_common.amqp import Publisher
from herald_common.statuses import OUTBOX_CHANNEL

from .metrics import DispatcherMetrics
from .woken import WokenLoop

log = structlog.get_logger("herald.relay")


BACKLOG_REFRESH = 5.0
"""Seconds between counts of the rows in backoff (the gauge); a pass can be far more frequent."""


class OutboxRelay(WokenLoop):
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        publisher: Publisher,
        exchange: str,
        *,
        batch_size: int,
        poll_interval: float,
        metrics: DispatcherMetrics,
    ) -> None:
        super().__init__(pool, OUTBOX_CHANNEL, poll_interval)
        self._publisher = publisher
        self._exchange = exchange
        self._batch_size = batch_size
        self._counted_at: float | None = None
        self._metrics = metrics

    async def _count_backlog(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._counted_at is not None and now - self._counted_at < BACKLOG_REFRESH:
            return
        self._counted_at = now
        self._metrics.outbox_in_backoff.set(await outbox.rows_in_backoff(self._pool))

    async def run_pass(self) -> bool:
        relayed = await outbox.relay_due(
            self._pool, self._publisher, self._exchange, self._batch_size
        )
        published, failed = relayed
        self._metrics.outbox_relayed.inc(published)
        for channel, count in relayed.channels.items():
            self._metrics.published.labels(channel).inc(count)
        self._metrics.outbox_failures.inc(failed)
        if failed:
            log.warning(
                "outbox rows not published; each waits its backoff",
                published=published,
                failed=failed,
            )
        elif published:
            log.info("relayed outbox messages", published=published)
        await self._count_backlog()
        # A full pass that got somewhere: more are probably due.
        return bool(published) and published + failed == self._batch_size
