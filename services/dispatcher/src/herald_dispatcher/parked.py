"""Watching the terminal ``<ns>.parked`` queue: nothing consumes it, so its depth is the signal.

A message lands there only when even a dead-letter queue's consumer could not take it (a
``.dead`` queue or ``outcomes.dead`` past its delivery limit, or the dispatcher parking what it
could not store). Each one needs an operator, so a non-zero depth logs an error on every check.
"""

from __future__ import annotations

import structlog
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import Gauge

from herald_common.amqp import queue_counts
from herald_common.control import QUEUE_TIMEOUT
from herald_common.periodic import Periodic

log = structlog.get_logger("herald.dispatcher")


class ParkedWatch(Periodic):
    def __init__(
        self, connection: AbstractRobustConnection, queue: str, gauge: Gauge, interval: float
    ) -> None:
        super().__init__(interval, "parked queue watch")
        self._connection = connection
        self._queue = queue
        self._gauge = gauge

    async def check(self) -> int:
        """Read the queue's depth (ready messages) into the gauge, and return it."""
        count, _ = await queue_counts(self._connection, self._queue, QUEUE_TIMEOUT)
        self._gauge.set(count)
        if count:
            log.error("messages are parked and need an operator", queue=self._queue, count=count)
        return count

    async def tick(self) -> None:
        await self.check()
