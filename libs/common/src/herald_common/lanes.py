"""Priority lanes inside a channel service: who takes a provider's next slot.

Each lane has its own work queue and consumer (``topology``), so a campaign of a million messages
in the normal lane never stands in the broker in front of a one-time code in the high lane. Inside
the service, the deliveries of every lane then wait for the same provider slots and rate tokens;
``LaneGate`` orders that wait: one delivery at a time queues for the slot and the token, and the
next one to do so is the oldest waiting delivery of the highest lane. Without it a high message
would wait behind every normal one already prefetched (up to ``HERALD_PREFETCH``) for a
rate-limited SMS provider, tens of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from .topology import LANES


class LaneGate:
    """Turns to go next, high lane first, first come first served within a lane."""

    def __init__(self) -> None:
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {lane: deque() for lane in LANES}
        self._taken = False

    def waiting(self, lane: str) -> int:
        return sum(1 for turn in self._waiting[lane] if not turn.done())

    @contextlib.asynccontextmanager
    async def turn(self, lane: str) -> AsyncIterator[None]:
        """Hold the turn while the block runs (it acquires the slot and the rate token)."""
        if self._taken:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[lane].append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass_on()  # handed the turn as it was canceled: the next one takes it
                else:
                    turn.cancel()  # skipped when the turn is passed on
                raise
        else:
            self._taken = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        for lane in LANES:
            queue = self._waiting[lane]
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._taken = False
