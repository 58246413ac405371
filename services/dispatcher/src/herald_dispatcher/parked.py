"""Watching the terminal ``<ns>.parked`` queue: nothing consumes it, so its depth is the signal.

A message lands there only when even a dead-letter queue's consumer could not take it (a
``.dead`` queue or ``outcomes.dead`` past its delivery limit, or the dispatcher parking what it
could not store). Each one needs an operator, so a non-zero depth logs an error on every check.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import Gauge

log = structlog.get_logger("herald.dispatcher")


class ParkedWatch:
    def __init__(
        self, connection: AbstractRobustConnection, queue: str, gauge: Gauge, interval: float
    ) -> None:
        self._connection = connection
        self._queue = queue
        self._gauge = gauge
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> int:
        """Read the queue's depth (ready messages) into the gauge, and return it."""
        # A throwaway channel: a passive declare of a missing queue closes its channel, and a
        # channel that declared the queue before would answer from its cache, not the broker.
        channel = await self._connection.channel()
        try:
            declared: Any = await channel.declare_queue(self._queue, passive=True, robust=False)
            count = int(declared.declaration_result.message_count)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        self._gauge.set(count)
        if count:
            log.error("messages are parked and need an operator", queue=self._queue, count=count)
        return count

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:
                log.warning("could not read the parked queue's depth", error=repr(exc))
            await asyncio.sleep(self._interval)
