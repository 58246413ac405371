"""The topology against the real broker: declaration, routing, confirms, and the retry tiers."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from herald_common.amqp import Publisher
from herald_common.errors import UnroutableError
from herald_common.settings import RetryPolicy
from herald_common.topology import Topology
from herald_common.worker import _own_headers
from tests.support.infra import Infra, queue_depth


async def _get(connection: AbstractRobustConnection, queue: str, timeout: float = 10.0) -> Any:
    """Wait for one message on ``queue`` and ack it."""
    channel = await connection.channel()
    try:
        declared = await channel.get_queue(queue, ensure=False)
        async with asyncio.timeout(timeout):
            while True:
                message: AbstractIncomingMessage | None = await declared.get(fail=False)
                if message is not None:
                    await message.ack()
                    return message
                await asyncio.sleep(0.05)
    finally:
        await channel.close()


async def test_declaring_twice_is_idempotent_and_queues_are_quorum(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    await topology.declare(channel)  # a restarted service declares again: no error
    policy = RetryPolicy(delays=(1, 5), max_attempts=3)
    infra.uses_retry_policy(namespace, policy)
    await topology.declare_retry_tiers(channel, "email", policy)
    await topology.declare_retry_tiers(channel, "email", policy)
    # A queue redeclared with other arguments would fail: ours are stable, passive works.
    for name in topology.queue_names({"email": policy}):
        await channel.declare_queue(name, passive=True)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(topology.work_queue("email"), durable=True)  # classic
    await channel.close()


async def test_publish_routes_by_channel_and_is_persistent(
    amqp: AbstractRobustConnection, namespace: str
) -> None:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    publisher = await Publisher.open(amqp, 5.0)
    await publisher.publish(
        topology.notifications_exchange, Topology.routing_key("email"), b"{}", headers={"a": 1}
    )
    message = await _get(amqp, topology.work_queue("email"))
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["a"] == 1
    await publisher.close()
    await channel.close()


async def test_unroutable_publish_is_an_error_not_a_silent_drop(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    publisher = await Publisher.open(amqp, 5.0)
    with pytest.raises(UnroutableError):
        await publisher.publish(topology.notifications_exchange, "carrier-pigeon.default", b"{}")
    with pytest.raises(UnroutableError):
        await publisher.publish("", f"{namespace}.no-such-queue", b"{}")
    # The publisher stays usable after a return.
    await publisher.publish(topology.notifications_exchange, Topology.routing_key("email"), b"{}")
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 1
    await publisher.close()
    await channel.close()


async def test_retry_tier_returns_messages_to_the_work_queue_every_time(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    """Republishing into the same tier again and again never trips the dead-letter cycle check."""
    topology = Topology(namespace)
    policy = RetryPolicy(delays=(0.2,), max_attempts=10)
    infra.uses_retry_policy(namespace, policy)
    channel = await amqp.channel()
    await topology.declare(channel)
    await topology.declare_retry_tiers(channel, "email", policy)
    publisher = await Publisher.open(amqp, 5.0)
    tier = topology.retry_queue("email", 0.2)
    headers: dict[str, Any] = {"herald-attempt": 1}
    for round_number in range(1, 5):
        await publisher.publish("", tier, b"payload", headers=headers)
        message = await _get(amqp, topology.work_queue("email"))
        assert message.body == b"payload"
        # The broker recorded the expiry; our republish must not carry that history forward.
        assert message.headers["x-death"][0]["reason"] == "expired"
        assert message.headers["herald-attempt"] == round_number
        headers = {**_own_headers(message.headers), "herald-attempt": round_number + 1}
    await publisher.close()
    await channel.close()
