"""``Publisher.publish_many`` against the real broker: one write for a batch, a result for each
message (confirmed, unroutable), the channel's own publishes unaffected, nothing confirmed after
a refusal, and a broken channel reported for every message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from herald_common import amqp as amqp_module
from herald_common.amqp import Outgoing, Publisher
from herald_common.errors import PublishError, UnroutableError
from herald_common.topology import Topology
from tests.support.infra import Infra, queue_depth


@pytest.fixture
async def topology(amqp: AbstractRobustConnection, namespace: str) -> Topology:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    return topology


@pytest.fixture
async def publisher(amqp: AbstractRobustConnection) -> AsyncIterator[Publisher]:
    publisher = await Publisher.open(amqp, 5.0)
    yield publisher
    await publisher.close()


async def _drain(
    connection: AbstractRobustConnection, queue: str, count: int
) -> list[AbstractIncomingMessage]:
    channel = await connection.channel()
    got: list[AbstractIncomingMessage] = []
    try:
        declared = await channel.get_queue(queue, ensure=False)
        async with asyncio.timeout(10):
            while len(got) < count:
                message = await declared.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                    continue
                await message.ack()
                got.append(message)
    finally:
        await channel.close()
    return got


async def test_a_batch_is_confirmed_message_by_message_and_arrives_whole_and_in_order(
    amqp: AbstractRobustConnection, topology: Topology, publisher: Publisher
) -> None:
    big = b"x" * 300_000  # larger than a frame: split into several body frames
    batch = [
        Outgoing(
            Topology.routing_key("email"),
            big if i == 3 else f'{{"n": {i}}}'.encode(),
            {"herald-attempt": i},
            message_id=str(uuid.uuid4()),
            correlation_id=f"c{i}",
        )
        for i in range(50)
    ]
    assert await publisher.publish_many(topology.notifications_exchange, batch) == [None] * 50
    # A publish of its own on the same channel afterwards is confirmed as ever.
    await publisher.publish(topology.notifications_exchange, Topology.routing_key("email"), b"{}")
    got = await _drain(amqp, topology.work_queue("email"), 51)
    assert [m.body for m in got[:50]] == [m.body for m in batch]
    assert [m.message_id for m in got[:50]] == [m.message_id for m in batch]
    assert [m.correlation_id for m in got[:50]] == [f"c{i}" for i in range(50)]
    assert got[7].headers["herald-attempt"] == 7
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)
    assert await publisher.publish_many(topology.notifications_exchange, []) == []


async def test_an_unroutable_message_fails_alone(
    topology: Topology, publisher: Publisher, infra: Infra
) -> None:
    keys = ["email", "carrier-pigeon.default", "sms", "email"]
    batch = [
        Outgoing(k if "." in k else Topology.routing_key(k), b"{}", message_id=str(uuid.uuid4()))
        for k in keys
    ]
    results = await publisher.publish_many(topology.notifications_exchange, batch)
    assert results[0] is None
    assert isinstance(results[1], UnroutableError)
    assert results[2] is None
    assert results[3] is None
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 2
    assert await queue_depth(infra.amqp_url, topology.work_queue("sms")) == 1
    # Nothing of the batch is left behind in the channel's bookkeeping.
    underlay = await publisher._channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    await asyncio.sleep(0)
    assert not [c for c in underlay.confirmations.values() if isinstance(c, asyncio.Future)]
    assert not underlay.message_id_delivery_tag


async def test_beyond_the_room_for_unconfirmed_publishes_only_the_overflow_fails(
    topology: Topology, publisher: Publisher, infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amqp_module, "MAX_UNCONFIRMED", 3)
    batch = [Outgoing(Topology.routing_key("email"), b"{}") for _ in range(5)]
    results = await publisher.publish_many(topology.notifications_exchange, batch)
    assert results[:3] == [None] * 3
    assert all(isinstance(r, PublishError) for r in results[3:])
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 3


async def test_a_message_that_cannot_be_framed_or_is_in_flight_already_fails_alone(
    topology: Topology, publisher: Publisher, infra: Infra
) -> None:
    key = Topology.routing_key("email")
    twice = str(uuid.uuid4())
    batch = [
        Outgoing(key, b"{}", message_id=twice),
        Outgoing("x" * 300, b"{}"),  # a routing key AMQP cannot carry (over 255 bytes)
        Outgoing(key, b"{}", message_id=twice),  # the same message again, while in flight
        Outgoing(key, b"{}", message_id=str(uuid.uuid4())),
    ]
    results = await publisher.publish_many(topology.notifications_exchange, batch)
    assert results[0] is None
    assert isinstance(results[1], PublishError)
    assert isinstance(results[2], PublishError)
    assert "already" in str(results[2])
    assert results[3] is None
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 2
    # Once confirmed, the same id may be published again.
    again = await publisher.publish_many(topology.notifications_exchange, batch[:1])
    assert again == [None]
    # Not while another publish of it (any, on this channel) awaits the broker's answer.
    underlay = await publisher._channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    underlay.message_id_delivery_tag[twice] = 10**9
    [refused] = await publisher.publish_many(topology.notifications_exchange, batch[:1])
    assert isinstance(refused, PublishError)
    assert "already" in str(refused)
    del underlay.message_id_delivery_tag[twice]
    assert await publisher.publish_many(topology.notifications_exchange, batch[:1]) == [None]
    assert await queue_depth(infra.amqp_url, topology.work_queue("email")) == 4


async def test_a_closed_channel_fails_every_message(
    topology: Topology, publisher: Publisher
) -> None:
    await publisher.close()
    batch = [Outgoing(Topology.routing_key("email"), b"{}") for _ in range(3)]
    results = await publisher.publish_many(topology.notifications_exchange, batch)
    assert len(results) == 3
    assert all(isinstance(r, PublishError) for r in results)
