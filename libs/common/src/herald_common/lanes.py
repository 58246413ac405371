"""Priority lanes inside a channel service: who takes a provider's next slot.

Each lane has its own work queue and consumer (``topology``), so a campaign of a million messages
in the normal lane never stands in the broker in front of a one-time code in the high lane. Inside
the service, the deliveries of every lane then wait for the same provider slots and rate tokens;
``LaneGate`` orders that wait: one delivery at a time queues for the slot and the token, and the
next one to do so is the oldest waiting delivery of the highest lane. Without it a high message
would wait behind every normal one already prefetched (up to ``HERALD_PREFETCH``) for a
rate-limited SMS provider, tens of seconds.

Strict priority alone would starve: while a million-message campaign keeps the normal lane's
waiters full, a low delivery would never get a turn, sit unacked until the broker's
``consumer_timeout`` closes the channel, be redelivered, and in the end reach the delivery limit
without ever being tried. So a waiter that has waited ``max_wait`` seconds goes before any
younger one, whatever its lane: the high lane is still served first within that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from .topology import LANES

MAX_WAIT = 30.0
"""Seconds after which a waiter goes before younger ones of higher lanes: far below RabbitMQ's
``consumer_timeout`` (30 minutes by default)."""


class LaneGate:
    """Turns to go next: high lane first, first come first served within a lane, and a waiter
    older than ``max_wait`` before any younger one."""

    def __init__(
        self, max_wait: float = MAX_WAIT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._waiting: dict[str, deque[tuple[float, asyncio.Future[None]]]] = {
            lane: deque() for lane in LANES
        }
        self._taken = False
        self._max_wait = max_wait
        self._clock = clock

    def waiting(self, lane: str) -> int:
        return sum(1 for _, turn in self._waiting[lane] if not turn.done())

    @contextlib.asynccontextmanager
    async def turn(self, lane: str) -> AsyncIterator[None]:
        """Hold the turn while the block runs (it acquires the slot and the rate token)."""
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, lane: str) -> None:
        """Take the turn (at once when nobody holds it); give it back with ``release``."""
        if not self._taken:
            self._taken = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[lane].append((self._clock(), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._pass_on()  # handed the turn as it was canceled: the next one takes it
            else:
                turn.cancel()  # skipped when the turn is passed on
            raise

    def release(self) -> None:
        self._pass_on()

    def _pass_on(self) -> None:
        heads: list[tuple[float, int, str]] = []
        for rank, lane in enumerate(LANES):
            queue = self._waiting[lane]
            while queue and queue[0][1].done():  # canceled while waiting
                queue.popleft()
            if queue:
                heads.append((queue[0][0], rank, lane))
        if not heads:
            self._taken = False
            return
        overdue = [head for head in heads if self._clock() - head[0] >= self._max_wait]
        # The oldest overdue waiter, else the head of the highest lane.
        _, _, lane = min(overdue) if overdue else min(heads, key=lambda head: head[1])
        self._waiting[lane].popleft()[1].set_result(None)
