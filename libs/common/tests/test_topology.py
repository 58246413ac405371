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
from herald_common.topology import DELAY_QUEUE_HEADER, LANES, Topology
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


@pytest.mark.parametrize("lane", LANES)
async def test_retry_tier_returns_messages_to_their_lane_every_time(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra, lane: str
) -> None:
    """Republishing into the same tier again and again never trips the dead-letter cycle check,
    and the tier, shared by the lanes, hands each message back to the lane it came from."""
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
        await publisher.publish(
            topology.delays_exchange,
            Topology.routing_key("email", lane),
            b"payload",
            headers={**headers, DELAY_QUEUE_HEADER: tier},
        )
        message = await _get(amqp, topology.work_queue("email", lane))
        assert message.body == b"payload"
        # The broker recorded the expiry; our republish must not carry that history forward.
        assert message.headers["x-death"][0]["reason"] == "expired"
        assert message.headers["herald-attempt"] == round_number
        headers = {**_own_headers(message.headers), "herald-attempt": round_number + 1}
    await publisher.close()
    await channel.close()


def test_every_queue_has_a_delivery_limit_and_all_but_parked_dead_letter_safely() -> None:
    topology = Topology("ns")
    queues = topology.queues({"email": RetryPolicy(delays=(1, 5), max_attempts=3, jitter=0.5)})
    assert set(queues) >= {
        "ns.parked", "ns.outcomes", "ns.outcomes.dead", "ns.email", "ns.email.dead",
        "ns.email.delay.1s", "ns.email.delay.5s", "ns.email.high", "ns.email.low",
        "ns.push.fcm.high", "ns.push.webpush.low",
    }  # fmt: skip
    for name, arguments in queues.items():
        assert arguments["x-queue-type"] == "quorum", name
        assert isinstance(arguments["x-delivery-limit"], int), name
        assert arguments["x-delivery-limit"] >= 1, name
        if name == topology.parked_queue:
            # Terminal: dead-lettering out of it could only lead back to where it came from.
            assert "x-dead-letter-exchange" not in arguments
            continue
        assert arguments["x-dead-letter-strategy"] == "at-least-once", name
        assert arguments["x-overflow"] == "reject-publish", name  # at-least-once requires it
        assert "x-dead-letter-exchange" in arguments, name
        if ".delay." in name:
            # A tier hands each message back with its own routing key: to its lane.
            assert arguments["x-dead-letter-exchange"] == topology.notifications_exchange
            assert "x-dead-letter-routing-key" not in arguments
            continue
        assert arguments["x-dead-letter-routing-key"], name
    # The .dead queues lead to parked (a queue outside their x-death history), not back into
    # the dead-letter exchange: that would be a dead-letter cycle, dropped by the broker.
    for name in (topology.dead_letter_queue("email"), topology.outcomes_dead_letter_queue):
        assert queues[name]["x-dead-letter-exchange"] == ""
        assert queues[name]["x-dead-letter-routing-key"] == topology.parked_queue


async def test_the_broker_holds_every_queue_with_its_limit_and_dead_lettering(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    """A redeclaration missing an argument the queue has fails: so the arguments are there."""
    topology = Topology(namespace)
    policy = RetryPolicy(delays=(1,), max_attempts=2)
    infra.uses_retry_policy(namespace, policy)
    channel = await amqp.channel()
    await topology.declare(channel)
    await topology.declare_retry_tiers(channel, "email", policy)
    await channel.close()
    for name, arguments in topology.queues({"email": policy}).items():
        for missing in ("x-delivery-limit", "x-dead-letter-exchange", "x-dead-letter-strategy"):
            if missing not in arguments:
                assert name == topology.parked_queue
                assert missing != "x-delivery-limit"
                continue
            channel = await amqp.channel()
            without = {k: v for k, v in arguments.items() if k != missing}
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await channel.declare_queue(name, durable=True, arguments=without)
        channel = await amqp.channel()
        await channel.declare_queue(name, durable=True, arguments=arguments)
        await channel.close()


async def _deliver_and_drop(connection: AbstractRobustConnection, queue: str) -> bool:
    """Take one message from ``queue`` without acking it and close the channel (a consumer that
    crashed): the broker requeues it and counts the delivery. False when ``queue`` was empty."""
    channel = await connection.channel()
    try:
        declared = await channel.get_queue(queue, ensure=False)
        return await declared.get(no_ack=False, fail=False) is not None
    finally:
        await channel.close()


async def _wait_until_moved(
    connection: AbstractRobustConnection, source: str, target: str, infra: Infra
) -> int:
    """Redeliver the message on ``source`` until the broker dead-letters it into ``target``;
    returns how many deliveries that took."""
    deliveries = 0
    async with asyncio.timeout(20):
        while await queue_depth(infra.amqp_url, target) == 0:
            if await _deliver_and_drop(connection, source):
                deliveries += 1
            else:
                await asyncio.sleep(0.05)  # being dead-lettered
    return deliveries


@pytest.mark.parametrize("start", ["work queue", "outcomes"])
async def test_a_message_past_the_delivery_limit_of_a_dead_queue_ends_parked(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra, start: str
) -> None:
    """work queue (or outcomes) -> .dead -> parked, each hop for delivery_limit: the two
    dead-letterings go to queues outside the message's x-death history, so none is dropped."""
    topology = Topology(namespace, delivery_limit=1)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    publisher = await Publisher.open(amqp, 5.0)
    if start == "work queue":
        first, dead = topology.work_queue("email"), topology.dead_letter_queue("email")
        await publisher.publish(
            topology.notifications_exchange, Topology.routing_key("email"), b"poison"
        )
    else:
        first, dead = topology.outcomes_queue, topology.outcomes_dead_letter_queue
        await publisher.publish(topology.events_exchange, Topology.outcome_routing_key("email"),
                                b"poison")  # fmt: skip
    await publisher.close()
    assert await _wait_until_moved(amqp, first, dead, infra) >= 1
    assert await _wait_until_moved(amqp, dead, topology.parked_queue, infra) >= 1
    message = await _get(amqp, topology.parked_queue)
    assert message.body == b"poison"
    deaths = {(d["queue"], d["reason"]) for d in message.headers["x-death"]}
    assert deaths == {(first, "delivery_limit"), (dead, "delivery_limit")}
    assert await queue_depth(infra.amqp_url, dead) == 0


async def test_each_lane_gets_only_its_own_messages_even_where_the_old_binding_was_left(
    amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    """A broker that ran Herald before lanes has the normal queue bound to ``email.#``, which
    would copy every high and low message into it too: declaring removes that binding."""
    topology = Topology(namespace)
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        topology.notifications_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    old = await channel.declare_queue(
        topology.work_queue("email"), durable=True, arguments=topology.work_queue_arguments("email")
    )
    await old.bind(exchange, routing_key="email.#")
    await topology.declare(channel)
    await channel.close()
    publisher = await Publisher.open(amqp, 5.0)
    for lane in LANES:
        await publisher.publish(
            topology.notifications_exchange, Topology.routing_key("email", lane), lane.encode()
        )
    await publisher.close()
    for lane in LANES:
        message = await _get(amqp, topology.work_queue("email", lane))
        assert message.body == lane.encode()
        assert await queue_depth(infra.amqp_url, topology.work_queue("email", lane)) == 0
    # Messages stored before lanes (outbox rows) still route to the normal lane.
    assert Topology.routing_key("email") == "email.default"
