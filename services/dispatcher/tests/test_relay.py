"""The outbox relay: a row that keeps failing waits a backoff of its own instead of holding up
the rows behind it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common import outbox
from herald_common.amqp import Publisher
from herald_common.topology import Topology
from herald_dispatcher.metrics import DispatcherMetrics
from herald_dispatcher.relay import OutboxRelay
from services.dispatcher.tests.support import notification, until
from tests.support.infra import Infra, queue_depth


async def _declared(amqp: AbstractRobustConnection, namespace: str) -> tuple[Topology, Publisher]:
    """The namespace's topology, declared, and a publisher to it."""
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    return topology, await Publisher.open(amqp, 5.0)


def test_publish_backoff_doubles_up_to_its_cap() -> None:
    waits = [outbox.publish_backoff(n) for n in range(1, 10)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert outbox.publish_backoff(10**6) == outbox.MAX_BACKOFF


async def test_a_failing_row_at_the_head_does_not_hold_up_the_rows_behind_it(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    topology, publisher = await _declared(amqp, namespace)
    async with pool.acquire() as connection:
        # No queue is bound for this routing key: every publish of it comes back unroutable.
        await outbox.insert(
            connection,
            [outbox.OutboxMessage(await notification(pool), "carrier-pigeon.default", b"bad")],
            delay=0,
        )
        good = [await notification(pool, status="queued", attempts=0) for _ in range(50)]
        await outbox.insert(
            connection,
            [outbox.OutboxMessage(i, "email.default", b"good") for i in good],
            delay=0,
        )

    async def relay(limit: int) -> tuple[int, int]:
        return await outbox.relay_due(
            pool, publisher, topology.notifications_exchange, limit, base_backoff=30
        )

    assert await relay(50) == (49, 1)
    assert await relay(50) == (1, 0)  # the failed row is not due again yet
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 50
    row = await pool.fetchrow("SELECT *, now() AS now FROM outbox")
    assert row is not None
    assert row["body"] == b"bad"
    assert row["publish_attempts"] == 1
    assert "unroutable" in row["last_error"]
    assert _seconds(row["available_at"] - row["now"]) > 25  # base_backoff ahead
    assert await outbox.rows_in_backoff(pool) == 1

    # Due again and failing again: the wait doubles, up to the cap.
    await pool.execute("UPDATE outbox SET available_at = now() - interval '1 second'")
    assert await relay(1) == (0, 1)
    row = await pool.fetchrow("SELECT *, now() AS now FROM outbox")
    assert row is not None
    assert row["publish_attempts"] == 2
    assert 55 < _seconds(row["available_at"] - row["now"]) <= 60

    # The running relay reports the row in backoff.
    registry = CollectorRegistry()
    running = OutboxRelay(
        pool,
        publisher,
        topology.notifications_exchange,
        batch_size=10,
        poll_interval=0.05,
        metrics=DispatcherMetrics.create(registry),
    )
    await running.start()
    await until(lambda: registry.get_sample_value("herald_outbox_rows_in_backoff") == 1)
    await running.stop()
    await publisher.close()


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


async def test_rows_in_backoff_never_delay_a_full_batch_of_good_ones(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    """As many failing rows as a pass takes, at the head: the next pass gets past them."""
    topology, publisher = await _declared(amqp, namespace)
    async with pool.acquire() as connection:
        bad = [await notification(pool) for _ in range(5)]
        await outbox.insert(
            connection, [outbox.OutboxMessage(i, "nowhere.default", b"bad") for i in bad], delay=0
        )
        good = [await notification(pool) for _ in range(5)]
        await outbox.insert(
            connection, [outbox.OutboxMessage(i, "email.default", b"good") for i in good], delay=0
        )
    exchange = topology.notifications_exchange
    assert await outbox.relay_due(pool, publisher, exchange, 5) == (0, 5)
    assert await outbox.relay_due(pool, publisher, exchange, 5) == (5, 0)
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 5
    waits = await pool.fetch("SELECT available_at > now() AS later FROM outbox")
    assert [w["later"] for w in waits] == [True] * 5
    await publisher.close()


async def test_scheduled_rows_are_published_when_due_and_queued_then(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    topology, publisher = await _declared(amqp, namespace)
    due, later, claimed = [await notification(pool, status="scheduled", attempts=0) for _ in "abc"]
    now = await pool.fetchval("SELECT now()")
    async with pool.acquire() as connection:
        await outbox.insert(
            connection,
            [outbox.OutboxMessage(i, "email.default", b"{}") for i in (due, later, claimed)],
            delay=0,
            due=[now - timedelta(seconds=1), now + timedelta(hours=1), now - timedelta(seconds=1)],
        )
    # A channel service got to one first (its message was published by an earlier relay pass
    # whose row delete was lost): it stays as the channel service left it.
    await pool.execute("UPDATE notifications SET status = 'sending' WHERE id = $1", claimed)
    try:
        assert await outbox.relay_due(pool, publisher, topology.notifications_exchange, 10) == (
            2,
            0,
        )
    finally:
        await publisher.close()
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 2
    statuses = dict(await pool.fetch("SELECT id, status FROM notifications"))
    assert statuses == {due: "queued", later: "scheduled", claimed: "sending"}
    assert await pool.fetchval("SELECT notification_id FROM outbox") == later
