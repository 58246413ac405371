"""The outbox relay: publishes outbox rows that are due, woken by NOTIFY or a poll."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import CollectorRegistry, Counter

from herald_common import outbox
from herald_common.amqp import Publisher

log = structlog.get_logger("herald.relay")

OUTBOX_CHANNEL = "herald_outbox"


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        publisher: Publisher,
        exchange: str,
        *,
        batch_size: int,
        poll_interval: float,
        registry: CollectorRegistry,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._exchange = exchange
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: PoolConnectionProxy[Any] | None = None
        self._relayed = Counter(
            "herald_outbox_relayed_total", "Outbox messages the relay published.", registry=registry
        )
        self._failed = Counter(
            "herald_outbox_relay_failures_total",
            "Outbox messages the relay could not publish (left for the next pass).",
            registry=registry,
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._unlisten()

    def _notified(self, *_: Any) -> None:
        self._wakeup.set()

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            self._listener = await self._pool.acquire()
            assert self._listener is not None
            await self._listener.add_listener(OUTBOX_CHANNEL, self._notified)

    async def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(OUTBOX_CHANNEL, self._notified)
                await self._pool.release(self._listener)
            self._listener = None

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
                published, failed = await outbox.relay_due(
                    self._pool, self._publisher, self._exchange, self._batch_size
                )
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("outbox relay pass failed", error=repr(exc))
                await self._unlisten()
                published, failed = 0, 1
            self._relayed.inc(published)
            self._failed.inc(failed)
            if published:
                log.info("relayed outbox messages", published=published, failed=failed)
            if published == self._batch_size and not failed:
                continue  # more are probably due
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
