"""The outbox relay: publishes outbox rows that are due, woken by NOTIFY or a poll.

Each pass takes the due rows (``outbox.relay_due``), publishes them and deletes the confirmed
ones; a row that failed waits a backoff of its own, so it never blocks the rows behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from herald_common import outbox
from herald_common.amqp import Publisher

from .metrics import DispatcherMetrics

log = structlog.get_logger("herald.relay")

OUTBOX_CHANNEL = "herald_outbox"

BACKLOG_REFRESH = 5.0
"""Seconds between counts of the rows in backoff (the gauge); a pass can be far more frequent."""


class OutboxRelay:
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
        self._pool = pool
        self._publisher = publisher
        self._exchange = exchange
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: PoolConnectionProxy[Any] | None = None
        self._counted_at: float | None = None
        self._metrics = metrics

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
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

    async def _count_backlog(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._counted_at is not None and now - self._counted_at < BACKLOG_REFRESH:
            return
        self._counted_at = now
        self._metrics.outbox_in_backoff.set(await outbox.rows_in_backoff(self._pool))

    async def _run(self) -> None:
        while True:
            # Cleared before the pass, not after: a NOTIFY arriving during the pass (rows
            # committed after its SELECT) must wake the next one instead of being lost.
            self._wakeup.clear()
            try:
                await self._listen()
                published, failed = await outbox.relay_due(
                    self._pool, self._publisher, self._exchange, self._batch_size
                )
                await self._count_backlog()
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("outbox relay pass failed", error=repr(exc))
                await self._unlisten()
                published, failed = 0, 0
            except Exception:
                # The relay must outlive a bug in one pass: the next pass may well succeed.
                log.exception("outbox relay pass failed unexpectedly")
                published, failed = 0, 0
            self._metrics.outbox_relayed.inc(published)
            self._metrics.outbox_failures.inc(failed)
            if failed:
                log.warning(
                    "outbox rows not published; each waits its backoff",
                    published=published,
                    failed=failed,
                )
            elif published:
                log.info("relayed outbox messages", published=published)
            if published and published + failed == self._batch_size:
                continue  # a full pass that got somewhere: more are probably due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
