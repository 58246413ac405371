"""A provider's rate limit, held across all instances of a channel service together.

A provider's limit is its account's, so N instances must share it. Each instance takes
``rate / consumers`` and ``burst / consumers`` (at least one message), where ``consumers`` is
the live consumer count of the queue(s) it calls the provider for. Every instance consumes
each of its queues once, so that count is the number of instances sending; the instance
itself is one of them, and a count of 0 (not consuming yet, or just cancelled) counts as 1.

- ``TokenBucket``: the arithmetic, pure: a clock and numbers, no asyncio, no broker.
- ``SharedRateLimiter``: ``await acquire()`` before each provider call; waits its turn.
- ``ConsumerCountSource``: the consumer count, refreshed by a passive declare every few
  seconds.

Nothing here coordinates instances beyond the count: no shared bucket in PostgreSQL or the
broker, no round trip per message. The cost is that the aggregate is off while the count is
stale: for up to one refresh interval after an instance joins or leaves (the runtime can call
``ConsumerCountSource.refresh`` right after it starts or cancels a consumer to shorten that).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity

from .amqp import queue_counts
from .periodic import Periodic

log = structlog.get_logger("herald.ratelimit")

_EPSILON = 1e-9
"""Float slack, so a caller that slept exactly the computed wait does not wait 1e-16 s more."""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    Pure: every method takes ``now`` (defaulting to ``clock()``), so tests drive it with
    numbers.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        _check(rate, burst)
        self._clock = clock
        self._rate = rate
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def tokens(self, now: float | None = None) -> float:
        """Tokens available at ``now`` (refilled to then)."""
        self._refill(self._clock() if now is None else now)
        return self._tokens

    def try_take(self, now: float | None = None) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is there (none taken)."""
        self._refill(self._clock() if now is None else now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def set_rate(self, rate: float, burst: float | None = None, now: float | None = None) -> None:
        """Change the rate (and the capacity) from ``now`` on.

        Tokens earned so far are settled at the old rate first, so a change never rewrites the
        past; a smaller capacity drops the tokens above it.
        """
        burst = self._capacity if burst is None else burst
        _check(rate, burst)
        self._refill(self._clock() if now is None else now)
        self._rate = rate
        self._capacity = float(burst)
        self._tokens = min(self._tokens, self._capacity)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)  # a clock that steps back earns nothing
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._last = max(self._last, now)


def _check(rate: float, burst: float) -> None:
    if rate <= 0 or burst < 1:
        raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate}, burst={burst})")


class ConsumerCount(Protocol):
    """How many instances share the limit (``ConsumerCountSource``, or a fixed number)."""

    def consumers(self) -> int: ...


class FixedCount:
    """A count that never changes: one instance alone, or tests."""

    def __init__(self, count: int = 1) -> None:
        self._count = count

    def consumers(self) -> int:
        return self._count


def share(total_rate: float, burst: float, consumers: int) -> tuple[float, float]:
    """This instance's (rate, burst) when ``consumers`` instances share the limit.

    A count below 1 is this instance before it consumes: it counts itself. The burst is shared
    too, or N instances idle together would send N bursts at once; it stays at least 1, the
    least a bucket can hold and still hand out a token.
    """
    n = max(1, consumers)
    return total_rate / n, max(1.0, burst / n)


class SharedRateLimiter:
    """``await acquire()`` before each call to the provider; it returns once the call may go.

    Waiters are served first come, first served: they queue on an ``asyncio.Lock`` (FIFO, and
    a newcomer does not overtake the queue), and only the head of the queue sleeps, for exactly
    the time until its token, so nothing polls and no herd wakes at once. The share is read at
    every acquire, so a new consumer count applies from the next token on.
    """

    def __init__(
        self,
        total_rate: float,
        burst: float,
        share_source: ConsumerCount,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check(total_rate, burst)
        self._total_rate = total_rate
        self._burst = burst
        self._source = share_source
        self._clock = clock
        self._consumers = max(1, share_source.consumers())
        rate, capacity = share(total_rate, burst, self._consumers)
        self._bucket = TokenBucket(rate, capacity, clock)
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """This instance's share now, in tokens a second."""
        return self._bucket.rate

    async def acquire(self) -> float:
        """Wait for a token; return the seconds waited (for ``herald_rate_limit_wait_seconds``)."""
        started = self._clock()
        async with self._lock:
            while True:
                self._follow_share()
                wait = self._bucket.try_take()
                if wait <= 0:
                    return self._clock() - started
                # Sleep, then ask again rather than assume: the share may change meanwhile.
                await asyncio.sleep(wait)

    def _follow_share(self) -> None:
        consumers = max(1, self._source.consumers())
        if consumers != self._consumers:
            self._consumers = consumers
            rate, capacity = share(self._total_rate, self._burst, consumers)
            self._bucket.set_rate(rate, capacity)
            log.info("rate limit share changed", consumers=consumers, rate=rate)


class ConsumerCountSource(Periodic):
    """The live consumer count of the instance's queues, refreshed every ``interval`` seconds.

    The count is the *largest* over ``queue_names``, not the sum: each instance has one
    consumer on each queue it consumes (lanes of a channel, or the one queue of a provider),
    so any one of them counts the instances, and summing would count each instance once per
    queue. The largest rather than one main queue's: an instance whose consumer on one queue
    is gone for a moment (its channel being restored after a blip) is still counted on the
    others, and no setting has to say which queue is the main one. Pass the queues from which
    the rate-limited provider is called (for a provider with a queue of its own, that queue).

    Each read is a passive declare on a channel of its own, closed after: a missing queue
    closes the channel it was declared on, and a channel that declared the queue before
    answers from aio-pika's cache. A missing queue says nothing; a broker that does not answer
    within ``timeout``, or a connection that is down, neither. When no queue answers, the last
    known count stays (1 before any is known), so a blip changes nobody's share.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        queue_names: Sequence[str],
        interval: float = 5.0,
        *,
        timeout: float = 5.0,
    ) -> None:
        if not queue_names:
            raise ValueError("at least one queue is needed")
        super().__init__(interval, "consumer count")
        self._connection = connection
        self._queues = tuple(queue_names)
        self._timeout = timeout
        self._count = 1
        self._failing = False

    def consumers(self) -> int:
        """The last known consumer count, at least 1 (this instance counts itself)."""
        return self._count

    async def start(self, *, now: bool = False) -> None:
        """Read the count once (so it is known before the first message), then keep it fresh
        (``refresh`` every interval; it keeps the last count when the broker does not answer)."""
        if self._task is not None:
            return
        await self.refresh()
        await super().start()

    async def tick(self) -> None:
        await self.refresh()

    async def refresh(self) -> int:
        """Read the count now; keep the last one when no queue answers. Returns the count."""
        counts: list[int] = []
        errors: list[str] = []
        for name in self._queues:
            try:
                count = await self._read(name)
            except ChannelNotFoundEntity:
                continue  # not declared yet: nobody consumes it
            except Exception as exc:
                errors.append(f"{name}: {exc!r}")
                continue
            counts.append(count)
        if counts:
            self._count = max(1, *counts)
        if errors and not self._failing:
            log.warning("cannot read consumer counts; keeping the last",
                        count=self._count, errors=errors)  # fmt: skip
        elif self._failing and not errors:
            log.info("reading consumer counts again", count=self._count)
        self._failing = bool(errors)
        return self._count

    async def _read(self, name: str) -> int:
        _, consumers = await queue_counts(self._connection, name, self._timeout)
        return consumers
