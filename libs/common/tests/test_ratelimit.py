"""The shared rate limit: bucket arithmetic, the limiter's pacing, and consumer counts.

Timing tests count tokens taken within a window of time, never how long one call took: a token
bucket cannot hand out more than ``burst + rate * window`` in a window, and on a busy machine
the event loop can only hand out fewer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from herald_common.ratelimit import (
    ConsumerCountSource,
    FixedCount,
    SharedRateLimiter,
    TokenBucket,
    share,
)
from herald_common.topology import Topology
from tests.support.infra import Infra


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


# -- the bucket (pure) ---------------------------------------------------------------------------


def test_bucket_starts_full_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.1)
    clock.now += 0.04
    assert bucket.try_take() == pytest.approx(0.06)  # 0.4 of a token is there already


def test_waiting_the_time_it_says_is_enough() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=3.0, burst=1, clock=clock)
    assert bucket.try_take() == 0.0
    for _ in range(1000):
        wait = bucket.try_take()
        assert wait > 0
        clock.now += wait
        assert bucket.try_take() == 0.0  # never a second, tiny wait from float error


def test_refill_is_capped_at_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=5, clock=clock)
    for _ in range(5):
        bucket.try_take()
    clock.now += 0.25
    assert bucket.tokens() == pytest.approx(2.5)
    clock.now += 3600
    assert bucket.tokens() == pytest.approx(5.0)


def test_a_paced_caller_gets_rate_times_time_plus_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=7.0, burst=4, clock=clock)
    start, taken = clock.now, 0
    while True:
        wait = bucket.try_take()
        if wait == 0.0:
            taken += 1
            continue
        if clock.now + wait > start + 100.0:
            break
        clock.now += wait
    assert taken == 7 * 100 + 4


def test_a_rate_change_applies_from_then_on() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=10, clock=clock)
    for _ in range(10):
        bucket.try_take()
    clock.now += 0.5
    bucket.set_rate(2.0)  # 5 tokens earned at the old rate are kept
    clock.now += 1.0
    assert bucket.tokens() == pytest.approx(7.0)
    assert bucket.rate == 2.0


def test_a_smaller_burst_drops_the_tokens_above_it() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=9, clock=clock)
    bucket.set_rate(10.0, burst=3)
    assert bucket.capacity == 3.0
    assert bucket.tokens() == pytest.approx(3.0)


def test_a_clock_stepping_back_earns_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=1, clock=clock)
    bucket.try_take()
    clock.now -= 5.0
    assert bucket.tokens() == 0.0
    clock.now += 5.05
    assert bucket.tokens() == pytest.approx(0.5)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate, burst)


@pytest.mark.parametrize(
    ("consumers", "expected"),
    [(0, (30.0, 6.0)), (1, (30.0, 6.0)), (3, (10.0, 2.0)), (4, (7.5, 1.5)), (12, (2.5, 1.0))],
)
def test_share(consumers: int, expected: tuple[float, float]) -> None:
    assert share(30.0, 6, consumers) == pytest.approx(expected)


# -- the limiter (asyncio, real time) ------------------------------------------------------------


class Counter:
    """A consumer count a test sets by hand."""

    def __init__(self, count: int) -> None:
        self.count = count

    def consumers(self) -> int:
        return self.count


async def _drive(
    limiters: list[SharedRateLimiter], acquirers: int, seconds: float
) -> list[list[float]]:
    """``acquirers`` tasks per limiter take tokens for ``seconds``; each task's take times."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    takes: list[list[float]] = []

    async def take(limiter: SharedRateLimiter, times: list[float]) -> None:
        while True:
            await limiter.acquire()
            times.append(loop.time() - start)

    tasks = []
    for limiter in limiters:
        for _ in range(acquirers):
            times: list[float] = []
            takes.append(times)
            tasks.append(asyncio.create_task(take(limiter, times)))
    await asyncio.sleep(seconds + 0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return takes


def _within(takes: list[list[float]], start: float, end: float) -> int:
    return sum(1 for times in takes for t in times if start <= t < end)


async def test_concurrent_acquirers_get_rate_times_time_plus_burst() -> None:
    rate, burst, seconds = 50.0, 10, 2.0
    limiter = SharedRateLimiter(rate, burst, FixedCount(1))
    takes = await _drive([limiter], acquirers=20, seconds=seconds)
    taken = _within(takes, 0.0, seconds)
    expected = rate * seconds + burst  # 110
    assert expected * 0.9 <= taken <= expected + 1


async def test_waiters_are_served_in_turn() -> None:
    limiter = SharedRateLimiter(40.0, 1, FixedCount(1))
    takes = await _drive([limiter], acquirers=8, seconds=1.0)
    order = [task for _, task in sorted((t, i) for i, times in enumerate(takes) for t in times)]
    # The first task takes the burst token and queues again before the others have started;
    # from then on each task rejoins the back of the queue after its token: strict turns.
    laps = order[2:]
    assert len(laps) >= 30
    for i in range(len(laps) - 8):
        assert len(set(laps[i : i + 8])) == 8, order


async def test_acquire_reports_the_time_it_waited() -> None:
    limiter = SharedRateLimiter(5.0, 1, FixedCount(1))
    assert await limiter.acquire() < 0.05  # the burst: no wait to speak of
    # The next token is 0.2 s away; a sleep never ends much before its deadline.
    assert await limiter.acquire() >= 0.15


async def test_the_share_follows_the_consumer_count() -> None:
    count = Counter(1)
    limiter = SharedRateLimiter(60.0, 6, count)
    assert limiter.rate == 60.0
    count.count = 3
    await limiter.acquire()
    assert limiter.rate == 20.0
    count.count = 0  # not consuming: counts itself
    await limiter.acquire()
    assert limiter.rate == 60.0


async def test_a_cancelled_waiter_does_not_block_the_others() -> None:
    limiter = SharedRateLimiter(20.0, 1, FixedCount(1))
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())  # at the head, sleeping for its token
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    first.cancel()
    assert await asyncio.wait_for(second, timeout=2.0) >= 0.0
    assert first.cancelled()


# -- against the real broker ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _consumers(
    connection: AbstractRobustConnection, queue: str, n: int
) -> AsyncIterator[list[tuple[aio_pika.abc.AbstractQueue, str]]]:
    """``n`` consumers on ``queue``, each on a channel of its own (as n instances would be)."""
    channels = [await connection.channel() for _ in range(n)]

    async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.nack(requeue=True)

    consumers = []
    for channel in channels:
        declared = await channel.get_queue(queue, ensure=False)
        consumers.append((declared, await declared.consume(ignore)))
    try:
        yield consumers
    finally:
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close()


async def _declare_work_queue(connection: AbstractRobustConnection, namespace: str) -> str:
    # The email work queue of the test's namespace: quorum, as in production, and removed with
    # the namespace after the test.
    topology = Topology(namespace)
    name = topology.work_queue("email")
    channel = await connection.channel()
    try:
        await channel.declare_queue(
            name, durable=True, arguments=topology.work_queue_arguments("email")
        )
    finally:
        await channel.close()
    return name


async def _until(source: ConsumerCountSource, expected: int, timeout: float = 15.0) -> None:
    """Refresh until the count is ``expected`` (a quorum queue applies consumers through Raft,
    so the broker's count can lag a consume or cancel by a moment)."""
    async with asyncio.timeout(timeout):
        while await source.refresh() != expected:
            await asyncio.sleep(0.1)


async def test_consumer_count_source_counts_live_consumers(
    amqp: AbstractRobustConnection, namespace: str
) -> None:
    queue = await _declare_work_queue(amqp, namespace)
    source = ConsumerCountSource(amqp, [queue], interval=0.2)
    await source.start()
    try:
        assert source.consumers() == 1  # nobody consumes yet: this instance counts itself
        async with _consumers(amqp, queue, 3) as consumers:
            await _until(source, 3)
            for declared, tag in consumers[:2]:
                await declared.cancel(tag)
            # The background refresh sees it too, not only an explicit refresh.
            async with asyncio.timeout(15.0):
                while source.consumers() != 1:
                    await asyncio.sleep(0.1)
    finally:
        await source.stop()


async def test_consumer_count_is_the_largest_over_the_queues(
    amqp: AbstractRobustConnection, namespace: str
) -> None:
    queue = await _declare_work_queue(amqp, namespace)
    missing = f"{namespace}.no-such-queue"
    # The missing queue closes its throwaway channel; the other is still read.
    source = ConsumerCountSource(amqp, [missing, queue], interval=60.0)
    async with _consumers(amqp, queue, 2):
        await _until(source, 2)


async def test_consumer_count_keeps_the_last_known_when_the_queue_goes_or_the_broker_does(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    queue = await _declare_work_queue(amqp, namespace)
    source = ConsumerCountSource(amqp, [queue], interval=60.0)
    async with _consumers(amqp, queue, 2):
        await _until(source, 2)
    channel = await amqp.channel()
    await channel.queue_delete(queue)
    await channel.close()
    assert await source.refresh() == 2  # missing: nothing to say, the last count stands

    # A connection that is gone: the read fails, and the count stands.
    connection = await aio_pika.connect(infra.amqp_url)
    lost = ConsumerCountSource(connection, [queue], interval=60.0, timeout=2.0)
    await _declare_work_queue(amqp, namespace)
    async with _consumers(amqp, queue, 2):
        await _until(lost, 2)
    await connection.close()
    assert await lost.refresh() == 2


async def test_three_instances_share_the_total_rate(
    amqp: AbstractRobustConnection, namespace: str
) -> None:
    total, seconds, warmup = 30.0, 3.0, 0.5
    queue = await _declare_work_queue(amqp, namespace)
    async with _consumers(amqp, queue, 3):
        sources = [ConsumerCountSource(amqp, [queue], interval=1.0) for _ in range(3)]
        for source in sources:
            await _until(source, 3)
        limiters = [SharedRateLimiter(total, 3, source) for source in sources]
        assert [limiter.rate for limiter in limiters] == [10.0, 10.0, 10.0]
        takes = await _drive(limiters, acquirers=4, seconds=warmup + seconds)
    # Past the warm-up the initial bursts are spent: the window sees the steady rate only.
    taken = _within(takes, warmup, warmup + seconds)
    assert total * seconds * 0.9 <= taken <= total * seconds * 1.1, taken
