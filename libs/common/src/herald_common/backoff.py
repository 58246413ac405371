"""The one way Herald waits before trying a failing dependency again: doubling delays with a cap,
cut short by a stop. Used wherever PostgreSQL or RabbitMQ is retried in place (the service
start, the channel worker's steps, the dispatcher's stores)."""

from __future__ import annotations

import asyncio
import contextlib


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self._first = first
        self._cap = cap
        self.delay = first
        """What the next ``wait`` sleeps."""

    async def wait(self, stopping: asyncio.Event) -> bool:
        """Sleep ``delay`` (less if ``stopping`` is set meanwhile), then double it up to the
        cap; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=self.delay)
        self.delay = min(self.delay * 2, self._cap)
        return stopping.is_set()

    def reset(self) -> None:
        self.delay = self._first
