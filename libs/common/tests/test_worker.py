"""The channel-worker runtime against the real broker and database.

The provider here is a programmable in-process one: these tests are about the runtime's
decisions (ack, retry, dead letter, replay), not about any provider's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common.amqp import Publisher
from herald_common.errors import PermanentError, TransientError
from herald_common.providers import ProviderLimits
from herald_common.schemas import EmailContent, EmailDelivery, Headers, OutcomeBatch
from herald_common.settings import RetryPolicy, WorkerSettings
from herald_common.topology import Topology
from herald_common.worker import ChannelWorker, Receipt
from tests.support.infra import Infra


@dataclass
class ScriptedProvider:
    """Fails each notification as scripted ("transient", "permanent"), then succeeds."""

    name: str = "scripted"
    script: dict[str, list[str]] = field(default_factory=dict)
    calls: list[tuple[str, float]] = field(default_factory=list)
    delay: float = 0.0
    slots: asyncio.Semaphore | None = None
    """Bounds concurrent sends, as a real provider's connections do; None: unbounded."""

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self.slots or contextlib.AsyncExitStack()

    async def send(self, delivery: EmailDelivery) -> Receipt:
        key = str(delivery.id)
        self.calls.append((key, asyncio.get_running_loop().time()))
        if self.delay:
            await asyncio.sleep(self.delay)
        steps = self.script.get(key, [])
        step = steps.pop(0) if steps else "ok"
        if step == "transient":
            raise TransientError("451 try again later")
        if step == "permanent":
            raise PermanentError("550 no such user")
        if step == "handed over, then timed out":
            raise TransientError("timed out after DATA", maybe_delivered=True)
        if step == "slow down":
            raise TransientError("429 too many requests", retry_after=0.35)
        return Receipt(provider=self.name, provider_message_id=f"msg-{key}")

    async def close(self) -> None:
        return None

    def count(self, notification_id: uuid.UUID) -> int:
        return sum(1 for key, _ in self.calls if key == str(notification_id))


@dataclass
class Harness:
    namespace: str
    pool: asyncpg.Pool[Any]
    amqp: AbstractRobustConnection
    publisher: Publisher
    provider: ScriptedProvider
    topology: Topology
    worker: ChannelWorker | None = None

    async def start_worker(self, policy: RetryPolicy) -> None:
        settings = WorkerSettings(namespace=self.namespace, prefetch=16, provider_timeout=5)
        self.worker = ChannelWorker(
            channel="email",
            settings=settings,
            retry_policy=policy,
            providers=[self.provider],
            connection=self.amqp,
            pool=self.pool,
            registry=CollectorRegistry(),
        )
        await self.worker.start()

    async def notification(self, notification_id: uuid.UUID | None = None) -> EmailDelivery:
        delivery = EmailDelivery(
            id=notification_id or uuid.uuid4(),
            to="someone@example.com",
            content=EmailContent(subject="Hi", text="Hello"),
            created_at=datetime.now(UTC),
        )
        await self.pool.execute(
            """INSERT INTO notifications (id, channel, recipient, content, status)
               VALUES ($1, 'email', $2, $3::jsonb, 'queued')""",
            delivery.id,
            delivery.to,
            delivery.content.model_dump_json(),
        )
        return delivery

    async def publish(self, body: bytes, attempt: int = 1, lane: str = "normal") -> None:
        await self.publisher.publish(
            self.topology.notifications_exchange,
            Topology.routing_key("email", lane),
            body,
            headers={Headers.ATTEMPT: attempt, Headers.FIRST_ATTEMPT: 1},
        )

    async def attempts(self, notification_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT * FROM attempts WHERE notification_id = $1 ORDER BY attempt",
                notification_id,
            )
        )

    async def drain(self, queue: str, expect: int, timeout: float = 15.0) -> list[Any]:
        """Take ``expect`` messages from ``queue`` (waiting for them), then check for no more."""
        channel = await self.amqp.channel()
        declared = await channel.get_queue(queue, ensure=False)
        messages: list[Any] = []
        async with asyncio.timeout(timeout):
            while len(messages) < expect:
                message = await declared.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                messages.append(message)
        await asyncio.sleep(0.3)
        assert await declared.get(fail=False) is None, "more messages than expected"
        await channel.close()
        return messages

    async def outcomes(self, expect: int) -> list[Any]:
        """Outcome events (flattened from their batches) once ``expect`` have arrived."""
        channel = await self.amqp.channel()
        declared = await channel.get_queue(self.topology.outcomes_queue, ensure=False)
        found: list[Any] = []
        async with asyncio.timeout(15):
            while len(found) < expect:
                message = await declared.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                found += OutcomeBatch.model_validate_json(message.body).outcomes
        await channel.close()
        return found


@pytest.fixture
async def harness(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> AsyncIterator[Harness]:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    publisher = await Publisher.open(amqp, 5.0)
    h = Harness(namespace, pool, amqp, publisher, ScriptedProvider(), topology)
    for delays in ((0.2, 0.4), (0.3,), (1, 5, 30, 120, 600)):
        infra.uses_retry_policy(namespace, RetryPolicy(delays=delays, max_attempts=1))
    yield h
    if h.worker is not None:
        await h.worker.stop()
    await publisher.close()


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_a_delivery_is_sent_recorded_reported_and_acked(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    delivery = await harness.notification()
    await harness.publish(delivery.model_dump_json().encode())
    [outcome] = await harness.outcomes(1)
    assert (outcome.notification_id, outcome.result, outcome.disposition) == (
        delivery.id,
        "sent",
        "sent",
    )
    assert outcome.provider_message_id == f"msg-{delivery.id}"
    [attempt] = await harness.attempts(delivery.id)
    assert attempt["result"] == "sent"
    assert attempt["finished_at"] is not None
    assert not attempt["possible_duplicate"]
    assert harness.provider.count(delivery.id) == 1
    assert (
        await harness.pool.fetchval("SELECT status FROM notifications WHERE id = $1", delivery.id)
        == "sending"
    )  # the dispatcher, not the worker, moves it on from here
    await harness.drain(harness.topology.work_queue("email"), expect=0)


async def test_a_malformed_message_is_dead_lettered_and_the_consumer_keeps_working(
    harness: Harness,
) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    await harness.publish(b"this is not json")
    await harness.publish(json.dumps({"id": "not-a-uuid", "channel": "email"}).encode())
    delivery = await harness.notification()
    await harness.publish(delivery.model_dump_json().encode())
    dead = await harness.drain(harness.topology.dead_letter_queue("email"), expect=2)
    assert {m.headers[Headers.DEAD_LETTER_REASON] for m in dead} == {"malformed"}
    assert any("invalid email delivery" in m.headers[Headers.LAST_ERROR] for m in dead)
    assert {m.body for m in dead} == {
        b"this is not json",
        json.dumps({"id": "not-a-uuid", "channel": "email"}).encode(),
    }
    [outcome] = await harness.outcomes(1)
    assert outcome.result == "sent"


async def test_transient_failures_climb_the_ladder_then_succeed_once(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=4))
    delivery = await harness.notification()
    harness.provider.script[str(delivery.id)] = ["transient", "transient"]
    await harness.publish(delivery.model_dump_json().encode())
    outcomes = await harness.outcomes(3)
    assert [(o.attempt, o.disposition) for o in outcomes] == [
        (1, "retry"),
        (2, "retry"),
        (3, "sent"),
    ]
    assert outcomes[0].next_attempt_at is not None
    times = [t for key, t in harness.provider.calls if key == str(delivery.id)]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each wait is the tier's TTL (plus queueing), never less.
    assert 0.2 <= gaps[0] < 1.5, gaps
    assert 0.4 <= gaps[1] < 1.9, gaps
    rows = await harness.attempts(delivery.id)
    assert [r["result"] for r in rows] == ["transient_failure", "transient_failure", "sent"]
    assert rows[0]["error"] == "451 try again later"


async def test_retries_exhausted_go_to_the_dead_letter_queue(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    delivery = await harness.notification()
    harness.provider.script[str(delivery.id)] = ["transient"] * 10
    await harness.publish(delivery.model_dump_json().encode())
    [dead] = await harness.drain(harness.topology.dead_letter_queue("email"), expect=1)
    assert dead.headers[Headers.DEAD_LETTER_REASON] == "retries_exhausted"
    assert dead.headers[Headers.ATTEMPT] == 3
    assert dead.headers[Headers.LAST_ERROR] == "451 try again later"
    assert EmailDelivery.model_validate_json(dead.body).id == delivery.id
    assert harness.provider.count(delivery.id) == 3
    outcomes = await harness.outcomes(3)
    assert outcomes[-1].disposition == "dead_letter"


async def test_a_permanent_failure_is_dead_lettered_without_retries(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    delivery = await harness.notification()
    harness.provider.script[str(delivery.id)] = ["permanent"]
    await harness.publish(delivery.model_dump_json().encode())
    [dead] = await harness.drain(harness.topology.dead_letter_queue("email"), expect=1)
    assert dead.headers[Headers.DEAD_LETTER_REASON] == "permanent_failure"
    assert dead.headers[Headers.LAST_ERROR] == "550 no such user"
    await asyncio.sleep(0.6)  # longer than every tier: no retry comes
    assert harness.provider.count(delivery.id) == 1


async def test_a_message_for_an_unknown_notification_is_dead_lettered(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    stray = EmailDelivery(
        id=uuid.uuid4(),
        to="x@example.com",
        content=EmailContent(subject="s", text="t"),
        created_at=datetime.now(UTC),
    )
    await harness.publish(stray.model_dump_json().encode())
    [dead] = await harness.drain(harness.topology.dead_letter_queue("email"), expect=1)
    assert dead.headers[Headers.DEAD_LETTER_REASON] == "unknown_notification"
    assert harness.provider.calls == []


async def _deliver_unacked_then_drop(harness: Harness) -> None:
    """Take the waiting message without acking and close the channel: the broker redelivers it
    with ``redelivered`` set, as after a consumer crash."""
    channel = await harness.amqp.channel()
    queue = await channel.get_queue(harness.topology.work_queue("email"), ensure=False)
    async with asyncio.timeout(10):
        while (message := await queue.get(fail=False)) is None:
            await asyncio.sleep(0.05)
    assert not message.redelivered
    await channel.close()


async def test_a_redelivered_finished_attempt_replays_its_result_without_sending(
    harness: Harness,
) -> None:
    delivery = await harness.notification()
    await harness.pool.execute(
        """INSERT INTO attempts (notification_id, attempt, provider, started_at, finished_at,
                                 result, provider_message_id, lease_expires_at)
           VALUES ($1, 1, 'scripted', now(), now(), 'sent', 'msg-earlier', now())""",
        delivery.id,
    )
    await harness.publish(delivery.model_dump_json().encode())
    await _deliver_unacked_then_drop(harness)
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    [outcome] = await harness.outcomes(1)
    assert (outcome.result, outcome.provider_message_id) == ("sent", "msg-earlier")
    assert harness.provider.calls == []


async def test_a_redelivered_unfinished_attempt_is_sent_again_as_a_possible_duplicate(
    harness: Harness,
) -> None:
    delivery = await harness.notification()
    # Started by a process that died: no result, and its lease ran out.
    await harness.pool.execute(
        "INSERT INTO attempts (notification_id, attempt, provider, started_at, lease_expires_at) "
        "VALUES ($1, 1, 'scripted', now() - interval '1 minute', now() - interval '1 second')",
        delivery.id,
    )
    await harness.publish(delivery.model_dump_json().encode())
    await _deliver_unacked_then_drop(harness)
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    [outcome] = await harness.outcomes(1)
    assert outcome.possible_duplicate
    assert outcome.result == "sent"
    [attempt] = await harness.attempts(delivery.id)
    assert attempt["possible_duplicate"]
    assert harness.provider.count(delivery.id) == 1


async def test_a_fresh_duplicate_of_a_finished_attempt_is_skipped(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    delivery = await harness.notification()
    await harness.publish(delivery.model_dump_json().encode())
    await harness.outcomes(1)
    await harness.publish(delivery.model_dump_json().encode())  # e.g. a second outbox publish
    await _until(
        lambda: harness.pool.fetchval(
            "SELECT count(*) = 1 FROM attempts WHERE notification_id = $1", delivery.id
        )
    )
    await harness.drain(harness.topology.work_queue("email"), expect=0)
    assert harness.provider.count(delivery.id) == 1


async def test_a_retry_after_picks_the_first_tier_that_covers_it(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    delivery = await harness.notification()
    harness.provider.script[str(delivery.id)] = ["slow down"]
    await harness.publish(delivery.model_dump_json().encode())
    first, second = await harness.outcomes(2)
    assert first.disposition == "retry"
    assert first.next_attempt_at is not None
    assert (first.next_attempt_at - first.finished_at).total_seconds() == pytest.approx(0.4)
    times = [t for key, t in harness.provider.calls if key == str(delivery.id)]
    assert times[1] - times[0] >= 0.4  # the 0.2 s tier would have been too early
    assert second.result == "sent"


async def test_a_database_outage_holds_deliveries_and_loses_or_repeats_none(
    harness: Harness, infra: Infra, database_url: str
) -> None:
    """PostgreSQL refusing connections mid-run: the worker retries in place (no nack that would
    count towards the delivery limit), and every notification is sent once when it returns."""
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    deliveries = [await harness.notification() for _ in range(5)]
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        for delivery in deliveries:
            await harness.publish(delivery.model_dump_json().encode())
        await asyncio.sleep(3)
        assert harness.provider.calls == []  # nothing is sent before its attempt is claimed
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    outcomes = await harness.outcomes(5)
    assert {(o.notification_id, o.result) for o in outcomes} == {(d.id, "sent") for d in deliveries}
    assert all(harness.provider.count(d.id) == 1 for d in deliveries)
    await harness.drain(harness.topology.dead_letter_queue("email"), expect=0)


@dataclass
class PooledProvider(ScriptedProvider):
    """One connection: deliveries queue for the slot, and each send takes ``delay``."""

    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self.slots

    async def send(self, delivery: EmailDelivery) -> Receipt:
        assert self.slots.locked(), "send runs inside the slot the runtime took for it"
        return await super().send(delivery)


async def test_the_provider_timeout_does_not_count_the_wait_for_a_slot(harness: Harness) -> None:
    """Five deliveries behind one connection, 0.4 s each, a 1 s provider timeout: all five take
    2 s in all, yet none times out, because only the call itself is timed."""
    harness.provider = PooledProvider(delay=0.4)
    settings = WorkerSettings(namespace=harness.namespace, prefetch=16, provider_timeout=1)
    harness.worker = ChannelWorker(
        channel="email",
        settings=settings,
        retry_policy=RetryPolicy(delays=(0.2, 0.4), max_attempts=3),
        providers=[harness.provider],
        connection=harness.amqp,
        pool=harness.pool,
        registry=CollectorRegistry(),
    )
    await harness.worker.start()
    deliveries = [await harness.notification() for _ in range(5)]
    for delivery in deliveries:
        await harness.publish(delivery.model_dump_json().encode())
    outcomes = await harness.outcomes(5)
    assert [o.result for o in outcomes] == ["sent"] * 5
    assert all(harness.provider.count(d.id) == 1 for d in deliveries)


async def test_a_retry_after_a_maybe_delivered_failure_is_marked_a_possible_duplicate(
    harness: Harness,
) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    delivery = await harness.notification()
    harness.provider.script[str(delivery.id)] = ["handed over, then timed out"]
    await harness.publish(delivery.model_dump_json().encode())
    first, second = await harness.outcomes(2)
    assert (first.disposition, first.possible_duplicate) == ("retry", False)
    assert (second.result, second.possible_duplicate) == ("sent", True)
    rows = await harness.attempts(delivery.id)
    assert [r["possible_duplicate"] for r in rows] == [False, True]


@dataclass
class BrokenSlotProvider(ScriptedProvider):
    """Its slot fails once with an error the runtime does not know: a bug, not an outage."""

    broken: int = 1

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        if self.broken:
            self.broken -= 1
            raise RuntimeError("bug in the provider's pool")
        return contextlib.AsyncExitStack()


async def test_an_unexpected_error_dead_letters_the_delivery_instead_of_requeueing_it(
    harness: Harness,
) -> None:
    harness.provider = BrokenSlotProvider()
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    broken, fine = await harness.notification(), await harness.notification()
    await harness.publish(broken.model_dump_json().encode())
    [dead] = await harness.drain(harness.topology.dead_letter_queue("email"), expect=1)
    assert dead.headers[Headers.DEAD_LETTER_REASON] == "handler_error"
    assert "bug in the provider's pool" in dead.headers[Headers.LAST_ERROR]
    await harness.publish(fine.model_dump_json().encode())
    [outcome] = await harness.outcomes(1)
    assert (outcome.notification_id, outcome.result) == (fine.id, "sent")
    await harness.drain(harness.topology.work_queue("email"), expect=0)


async def test_a_transient_failure_fails_over_to_the_next_provider_within_the_attempt(
    harness: Harness,
) -> None:
    """Two providers in order: the first answers 451, the second sends. One attempt, sent by
    the second, and its history names the first and why the attempt moved on."""
    first, second = ScriptedProvider(name="first"), ScriptedProvider(name="second")
    settings = WorkerSettings(namespace=harness.namespace, prefetch=16, provider_timeout=5)
    harness.worker = ChannelWorker(
        channel="email",
        settings=settings,
        retry_policy=RetryPolicy(delays=(0.2, 0.4), max_attempts=3),
        providers=[first, second],
        connection=harness.amqp,
        pool=harness.pool,
        registry=CollectorRegistry(),
    )
    await harness.worker.start()
    delivery, permanent = await harness.notification(), await harness.notification()
    first.script[str(delivery.id)] = ["transient"]
    first.script[str(permanent.id)] = ["permanent"]
    await harness.publish(delivery.model_dump_json().encode())
    await harness.publish(permanent.model_dump_json().encode())
    outcomes = {o.notification_id: o for o in await harness.outcomes(2)}
    sent = outcomes[delivery.id]
    assert (sent.attempt, sent.result, sent.provider) == (1, "sent", "second")
    [row] = await harness.attempts(delivery.id)
    assert row["provider"] == "second"
    assert row["provider_hops"] == [{"provider": "first", "error": "451 try again later"}]
    # A permanent failure says nothing about the next provider: no failover.
    assert (outcomes[permanent.id].result, outcomes[permanent.id].provider) == (
        "permanent_failure",
        "first",
    )
    assert second.count(permanent.id) == 0


async def test_failing_over_after_a_provider_that_may_have_delivered_marks_a_duplicate(
    harness: Harness,
) -> None:
    """The first provider timed out after the hand-over (it may have delivered); the second
    sends it too: the recipient may have it twice, and the attempt says so."""
    first, second = ScriptedProvider(name="first"), ScriptedProvider(name="second")
    harness.worker = ChannelWorker(
        channel="email",
        settings=WorkerSettings(namespace=harness.namespace, prefetch=16, provider_timeout=5),
        retry_policy=RetryPolicy(delays=(0.2, 0.4), max_attempts=3),
        providers=[first, second],
        connection=harness.amqp,
        pool=harness.pool,
        registry=CollectorRegistry(),
    )
    await harness.worker.start()
    delivery = await harness.notification()
    first.script[str(delivery.id)] = ["handed over, then timed out"]
    await harness.publish(delivery.model_dump_json().encode())
    [outcome] = await harness.outcomes(1)
    assert (outcome.result, outcome.provider, outcome.possible_duplicate) == (
        "sent",
        "second",
        True,
    )
    [row] = await harness.attempts(delivery.id)
    assert row["possible_duplicate"]


@dataclass
class OutageProvider(ScriptedProvider):
    """Answers 503 while ``down``."""

    down: bool = True

    async def send(self, delivery: EmailDelivery) -> Receipt:
        self.calls.append((str(delivery.id), asyncio.get_running_loop().time()))
        if self.down:
            raise TransientError("503 service unavailable")
        return Receipt(provider=self.name, provider_message_id=f"msg-{delivery.id}")


async def _consumers(harness: Harness) -> int:
    channel = await harness.amqp.channel()
    try:
        declared = await channel.declare_queue(harness.topology.work_queue("email"), passive=True)
        return int(declared.declaration_result.consumer_count or 0)
    finally:
        await channel.close()


async def test_an_open_breaker_pauses_the_queue_and_burns_no_attempts(harness: Harness) -> None:
    provider = OutageProvider(name="flaky")
    limits = ProviderLimits(
        timeout=5, breaker_failure_threshold=2, breaker_window=30, breaker_cooldown=1.5
    )
    harness.worker = ChannelWorker(
        channel="email",
        settings=WorkerSettings(namespace=harness.namespace, prefetch=16, provider_timeout=5),
        retry_policy=RetryPolicy(delays=(0.2,), max_attempts=10),
        providers=[provider],
        connection=harness.amqp,
        pool=harness.pool,
        registry=CollectorRegistry(),
        limits=lambda name: limits,
    )
    await harness.worker.start()
    failing = [await harness.notification() for _ in range(2)]
    for delivery in failing:
        await harness.publish(delivery.model_dump_json().encode())
    await _until(lambda: _zero(_consumers(harness)))  # two failures opened it: paused
    calls_when_open = len(provider.calls)
    waiting = [await harness.notification() for _ in range(3)]
    for delivery in waiting:
        await harness.publish(delivery.model_dump_json().encode())
    await asyncio.sleep(0.5)
    assert len(provider.calls) == calls_when_open  # nothing tried while open
    provider.down = False
    outcomes = await harness.outcomes(2 + 3 + 2)  # 2 retries + 5 sent (paused: within cooldown)
    sent = {o.notification_id for o in outcomes if o.result == "sent"}
    assert sent == {d.id for d in failing + waiting}
    for delivery in waiting:
        assert len(await harness.attempts(delivery.id)) == 1  # no attempt burned while open
    assert await _consumers(harness) == 1  # resumed


async def _zero(count: Any) -> bool:
    return int(await count) == 0


async def test_the_high_lane_goes_before_a_backlog_of_the_normal_one(harness: Harness) -> None:
    """Normal deliveries fill the prefetch and queue for the provider's one slot; a high one
    arriving behind them is sent next, not after them."""
    harness.provider.slots = asyncio.Semaphore(1)
    harness.provider.delay = 0.05
    backlog = [await harness.notification() for _ in range(12)]
    for delivery in backlog:
        await harness.publish(delivery.model_dump_json().encode())
    await harness.start_worker(RetryPolicy(delays=(0.2, 0.4), max_attempts=3))
    await _until(lambda: _called(harness, 2))  # the backlog is in the process, queueing
    urgent = await harness.notification()
    await harness.publish(urgent.model_dump_json().encode(), lane="high")
    published_after = len(harness.provider.calls)
    await harness.outcomes(13)
    order = [key for key, _ in harness.provider.calls]
    # Prefetched together (16), the normal ones queue for the slot; without lanes the urgent
    # one would come last. It may follow the ones sent while it was on its way from the broker.
    assert order.index(str(urgent.id)) <= published_after + 2, (order.index(str(urgent.id)),
                                                                published_after)  # fmt: skip
    assert order.index(str(urgent.id)) < 11
    assert len(order) == 13


async def _called(harness: Harness, count: int) -> bool:
    return len(harness.provider.calls) >= count


async def test_a_retry_comes_back_in_its_own_lane(harness: Harness) -> None:
    await harness.start_worker(RetryPolicy(delays=(0.4,), max_attempts=3))
    delivery = await harness.notification()
    harness.provider.script[str(delivery.id)] = ["transient"]
    await harness.publish(delivery.model_dump_json().encode(), lane="high")
    [first] = await harness.outcomes(1)
    assert first.disposition == "retry"
    # Nobody consumes now: the tier hands the retry back to the high lane, not the normal one.
    assert harness.worker is not None
    await harness.worker.stop()
    harness.worker = None
    [again] = await harness.drain(harness.topology.work_queue("email", "high"), expect=1)
    assert again.headers[Headers.ATTEMPT] == 2
    await harness.drain(harness.topology.work_queue("email"), expect=0)
