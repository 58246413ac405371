"""Outcomes and dead letters with nowhere to go: a bad outcome costs only itself and is kept in
dead_outcomes; what cannot be stored at all is parked, with its reason, and watched."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry, Gauge

from herald_common.amqp import Publisher
from herald_common.schemas import Headers
from herald_common.topology import Topology
from herald_dispatcher.parked import ParkedWatch
from services.dispatcher.tests.support import (
    eventually,
    notification,
    outcome_json,
    running_consumers,
)
from tests.support.infra import Infra, queue_depth


async def test_a_malformed_outcome_costs_only_itself_and_lands_in_dead_outcomes(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    first, bad, last = [await notification(pool) for _ in range(3)]
    broken = outcome_json(bad, 1, "sent")
    del broken["finished_at"]
    body = json.dumps(
        {"outcomes": [outcome_json(first, 1, "sent"), broken, outcome_json(last, 1, "sent")]}
    ).encode()
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        for message in (body, b"not json at all"):
            await running.publisher.publish(
                topology.events_exchange, Topology.outcome_routing_key("email"), message
            )
        rows: list[Any] = await eventually(
            lambda: _rows_if(pool, "SELECT * FROM dead_outcomes ORDER BY body", count=2)
        )
        assert running.sample("herald_dead_outcomes_total", reason="malformed") == 2
        assert running.sample("herald_outcomes_dead_lettered_total", reason="malformed") == 2
    statuses = dict(
        await pool.fetch(
            "SELECT id, status FROM notifications WHERE id = ANY($1::uuid[])", [first, bad, last]
        )
    )
    assert statuses == {first: "sent", bad: "sending", last: "sent"}
    item_message, unreadable = sorted(rows, key=lambda r: r["body"] == b"not json at all")
    assert json.loads(item_message["body"])["outcomes"] == [broken]  # that item alone
    assert item_message["reason"] == "malformed"
    assert "finished_at" in item_message["error"]
    assert item_message["headers"][Headers.DEAD_LETTER_REASON] == "malformed"
    assert (unreadable["reason"], unreadable["body"]) == ("malformed", b"not json at all")
    assert unreadable["error"].startswith("not JSON")


async def _rows_if(pool: asyncpg.Pool[Any], query: str, count: int) -> list[Any] | None:
    rows = await pool.fetch(query)
    return rows if len(rows) >= count else None


async def test_an_outcome_the_broker_dead_letters_is_drained_with_its_reason(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    """outcomes.dead also takes what the broker dead-letters (x-first-death-reason)."""
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        await running.publisher.publish(
            topology.dead_letter_exchange,
            "outcomes",
            b'{"outcomes": []}',
            headers={"x-first-death-reason": "delivery_limit"},
        )
        row: asyncpg.Record = await eventually(lambda: pool.fetchrow("SELECT * FROM dead_outcomes"))
    assert (row["reason"], row["error"]) == ("delivery_limit", None)


async def test_what_cannot_be_stored_in_any_form_is_parked_with_its_reason(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    # dead_outcomes refuses everything (a data error, not an outage): not even the minimal
    # form goes in. The consumer must neither retry forever nor requeue in a loop.
    await pool.execute("ALTER TABLE dead_outcomes ADD CONSTRAINT refuse CHECK (false) NOT VALID")
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        await running.publisher.publish(
            topology.dead_letter_exchange,
            "outcomes",
            b"poison",
            headers={Headers.DEAD_LETTER_REASON: "malformed", "herald-note": "kept"},
        )
        await eventually(lambda: _depth(infra, topology.parked_queue))
        given_up = running.sample(
            "herald_dispatcher_given_up_total",
            queue=topology.outcomes_dead_letter_queue,
            reason="unstorable",
        )
        assert given_up == 1
    assert await queue_depth(infra.amqp_url, topology.outcomes_dead_letter_queue) == 0
    channel = await amqp.channel()
    parked = await channel.get_queue(topology.parked_queue, ensure=False)
    message = await parked.get(fail=False)
    assert message is not None
    assert message.body == b"poison"
    assert message.headers[Headers.DEAD_LETTER_REASON] == "unstorable"
    assert "CheckViolation" in str(message.headers[Headers.LAST_ERROR])
    assert message.headers["herald-dead-lettered-from"] == topology.outcomes_dead_letter_queue
    assert message.headers["herald-note"] == "kept"
    await message.ack()
    await channel.close()


async def _depth(infra: Infra, queue: str) -> int | None:
    return await queue_depth(infra.amqp_url, queue) or None


async def test_the_parked_queue_depth_is_watched(
    amqp: AbstractRobustConnection, namespace: str
) -> None:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    registry = CollectorRegistry()
    gauge = Gauge("herald_parked_messages", "parked", registry=registry)
    watch = ParkedWatch(amqp, topology.parked_queue, gauge, interval=60)
    assert await watch.check() == 0
    publisher = await Publisher.open(amqp, 5.0)
    for body in (b"one", b"two"):
        await publisher.publish("", topology.parked_queue, body)
    await publisher.close()
    assert await watch.check() == 2
    assert registry.get_sample_value("herald_parked_messages") == 2


async def test_outcomes_the_broker_gave_up_on_are_still_applied(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    """A readable outcome message past the outcomes queue's delivery limit (crashes, drains):
    its outcomes still tell the truth, so they are applied, and the message is kept with the
    broker's newest reason (not x-first-death-reason, which can be an older expiry)."""
    sending = await notification(pool, status="sending")
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        await running.publisher.publish(
            topology.dead_letter_exchange,
            "outcomes",
            json.dumps({"outcomes": [outcome_json(sending, 1, "sent")]}).encode(),
            headers={
                "x-first-death-reason": "expired",
                "x-death": [
                    {"reason": "delivery_limit", "queue": topology.outcomes_queue, "count": 1},
                    {"reason": "expired", "queue": "somewhere", "count": 1},
                ],
            },
        )
        row: asyncpg.Record = await eventually(lambda: pool.fetchrow("SELECT * FROM dead_outcomes"))
        status = await eventually(
            lambda: pool.fetchval(
                "SELECT status FROM notifications WHERE id = $1 AND status = 'sent'", sending
            )
        )
    assert row["reason"] == "delivery_limit"
    assert status == "sent"
