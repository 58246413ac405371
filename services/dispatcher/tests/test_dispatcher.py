"""The dispatcher's persistence and relay against the real database and broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common import outbox
from herald_common.amqp import Publisher
from herald_common.schemas import AttemptOutcome
from herald_common.topology import Topology
from herald_dispatcher.dead_letters import DeadLetter, read_dead_letter, store_dead_letters
from herald_dispatcher.metrics import DispatcherMetrics
from herald_dispatcher.outcomes import apply_outcomes
from herald_dispatcher.relay import OutboxRelay


async def _notification(
    pool: asyncpg.Pool[Any], status: str = "sending", attempts: int = 1
) -> uuid.UUID:
    notification_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO notifications (id, channel, recipient, content, status, attempts)
           VALUES ($1, 'email', 'a@example.com', '{}'::jsonb, $2, $3)""",
        notification_id,
        status,
        attempts,
    )
    return notification_id


def _outcome(
    notification_id: uuid.UUID, attempt: int, disposition: str, **extra: Any
) -> AttemptOutcome:
    now = datetime.now(UTC)
    result = {"sent": "sent", "retry": "transient_failure", "dead_letter": "permanent_failure"}
    return AttemptOutcome(
        notification_id=notification_id,
        channel="email",
        attempt=attempt,
        result=result[disposition],
        disposition=disposition,
        started_at=now,
        finished_at=now,
        **extra,
    )


async def test_outcomes_set_status_and_never_go_backwards(pool: asyncpg.Pool[Any]) -> None:
    retried = await _notification(pool)
    sent = await _notification(pool, attempts=2)
    stale = await _notification(pool, attempts=3)
    later = datetime.now(UTC) + timedelta(seconds=30)
    await apply_outcomes(
        pool,
        [
            _outcome(retried, 1, "retry", error="451 later", next_attempt_at=later),
            _outcome(sent, 1, "retry", error="451 later"),  # older than the one below
            _outcome(sent, 2, "sent", provider="smtp", provider_message_id="<m@x>"),
            _outcome(stale, 2, "retry", error="old news"),  # attempt 3 already started
        ],
    )
    rows = {
        r["id"]: r
        for r in await pool.fetch(
            "SELECT * FROM notifications WHERE id = ANY($1::uuid[])", [retried, sent, stale]
        )
    }
    assert rows[retried]["status"] == "retrying"
    assert rows[retried]["next_attempt_at"] == later
    assert rows[retried]["last_error"] == "451 later"
    assert rows[sent]["status"] == "sent"
    assert rows[sent]["provider_message_id"] == "<m@x>"
    assert rows[sent]["sent_at"] is not None
    assert rows[stale]["status"] == "sending"
    # A repeated or late event for a final notification changes nothing.
    await apply_outcomes(pool, [_outcome(sent, 2, "retry", error="late")])
    assert await pool.fetchval("SELECT status FROM notifications WHERE id = $1", sent) == "sent"


async def test_dead_letters_fail_their_notification_once(pool: asyncpg.Pool[Any]) -> None:
    notification_id = await _notification(pool)

    def letter(reason: str) -> DeadLetter:
        return DeadLetter(
            id=uuid.uuid4(),
            notification_id=notification_id,
            channel="email",
            reason=reason,
            last_error="550 no such user",
            attempts=1,
            body=b"{}",
            headers={},
            dead_lettered_at=datetime.now(UTC),
        )

    await store_dead_letters(pool, [letter("permanent_failure"), letter("permanent_failure")])
    await store_dead_letters(pool, [letter("permanent_failure")])  # a redelivered copy
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1
    row = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", notification_id)
    assert row is not None
    assert (row["status"], row["failure_reason"], row["last_error"]) == (
        "failed",
        "permanent_failure",
        "550 no such user",
    )
    # A malformed message has no notification; it is kept all the same.
    orphan = DeadLetter(
        uuid.uuid4(), None, "email", "malformed", "bad json", None, b"x", {}, datetime.now(UTC)
    )
    await store_dead_letters(pool, [orphan])
    assert (
        await pool.fetchval("SELECT count(*) FROM dead_letters WHERE notification_id IS NULL") == 1
    )


async def test_the_relay_publishes_due_rows_only_and_deletes_them(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    publisher = await Publisher.open(amqp, 5.0)
    due = await _notification(pool, status="queued", attempts=0)
    later = await _notification(pool, status="queued", attempts=0)
    async with pool.acquire() as connection:
        await outbox.insert(
            connection, [outbox.OutboxMessage(due, "email.default", b'{"n": 1}')], delay=0
        )
        await outbox.insert(
            connection, [outbox.OutboxMessage(later, "email.default", b'{"n": 2}')], delay=3600
        )
    relay = OutboxRelay(
        pool,
        publisher,
        topology.notifications_exchange,
        batch_size=100,
        poll_interval=0.1,
        metrics=DispatcherMetrics.create(CollectorRegistry()),
    )
    await relay.start()
    queue = await channel.get_queue(topology.work_queue("email"), ensure=False)
    async with asyncio.timeout(10):
        while (message := await queue.get(fail=False)) is None:
            await asyncio.sleep(0.05)
    await relay.stop()
    assert message.body == b'{"n": 1}'
    assert message.message_id == str(due)
    assert await queue.get(fail=False) is None
    remaining = await pool.fetch("SELECT notification_id FROM outbox")
    assert [r["notification_id"] for r in remaining] == [later]
    await publisher.close()
    await channel.close()


class _Message:
    """Just the fields ``read_dead_letter`` reads from an incoming message."""

    def __init__(self, body: bytes, headers: dict[str, Any]) -> None:
        self.body = body
        self.headers = headers


def test_any_dead_lettered_body_can_be_read() -> None:
    notification_id = uuid.uuid4()
    cases: list[tuple[bytes, uuid.UUID | None]] = [
        (b"not json", None),
        (b'{"channel": "email"}', None),
        (b"[1, 2]", None),
        (b'"text"', None),
        (b'{"id": "nope"}', None),
        (f'{{"id": "{notification_id}"}}'.encode(), notification_id),
    ]
    for body, expected in cases:
        letter = read_dead_letter(_Message(body, {"x-first-death-reason": "rejected"}), "email")  # type: ignore[arg-type]
        assert letter.notification_id == expected
        assert letter.reason == "rejected"


async def test_two_relays_never_publish_the_same_row(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    ids = [await _notification(pool, status="queued", attempts=0) for _ in range(600)]
    async with pool.acquire() as connection:
        await outbox.insert(
            connection,
            [outbox.OutboxMessage(i, "email.default", str(i).encode()) for i in ids],
            delay=0,
        )
    publishers = [await Publisher.open(amqp, 5.0) for _ in range(2)]
    relays = [
        OutboxRelay(
            pool,
            publisher,
            topology.notifications_exchange,
            batch_size=50,
            poll_interval=0.05,
            metrics=DispatcherMetrics.create(CollectorRegistry()),
        )
        for publisher in publishers
    ]
    for relay in relays:
        await relay.start()
    async with asyncio.timeout(30):
        while await pool.fetchval("SELECT count(*) FROM outbox"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    for relay in relays:
        await relay.stop()
    queue = await channel.get_queue(topology.work_queue("email"), ensure=False)
    bodies = []
    while (message := await queue.get(fail=False)) is not None:
        bodies.append(message.body)
        await message.ack()
    assert len(bodies) == 600
    assert set(bodies) == {str(i).encode() for i in ids}
    for publisher in publishers:
        await publisher.close()
    await channel.close()
