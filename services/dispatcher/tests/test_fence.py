"""The redrive fence: outcomes and dead letters of an attempt that no longer counts change
nothing (a redrive moved first_attempt past it, a later attempt started, or it was sent)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from herald_common.schemas import Headers
from herald_common.topology import Topology
from herald_dispatcher.dead_letters import STORED, NotificationState, judge, store_dead_letters
from herald_dispatcher.outcomes import apply_outcomes
from services.dispatcher.tests.support import (
    letter,
    notification,
    outcome,
    running_consumers,
    until,
)
from tests.support.infra import Infra, queue_depth


async def _row(pool: asyncpg.Pool[Any], notification_id: uuid.UUID) -> asyncpg.Record:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM notifications WHERE id = $1", notification_id
    )
    assert row is not None
    return row


async def test_a_late_outcome_of_an_attempt_before_a_redrive_changes_nothing(
    pool: asyncpg.Pool[Any],
) -> None:
    # Attempt 3 was dead-lettered; a redrive queued the notification again for attempt 4.
    redriven = await notification(pool, status="queued", attempts=3, first_attempt=4)
    await apply_outcomes(pool, [outcome(redriven, 3, "dead_letter", error="late news")])
    row = await _row(pool, redriven)
    assert (row["status"], row["last_error"], row["failure_reason"]) == ("queued", None, None)
    # The new generation's outcomes do count.
    await apply_outcomes(pool, [outcome(redriven, 4, "retry", error="451 later")])
    row = await _row(pool, redriven)
    assert (row["status"], row["attempts"], row["last_error"]) == ("retrying", 4, "451 later")


async def test_a_dead_letter_for_a_sent_notification_is_not_stored_but_acked_and_counted(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    sent = await notification(pool, status="sent", attempts=1)
    assert await store_dead_letters(pool, [letter(sent, 1), letter(sent, None)]) == [
        "notification_sent",
        "notification_sent",
    ]
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert (await _row(pool, sent))["status"] == "sent"

    # Through the queue: acked (nothing left to redeliver), counted by why, still not stored.
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        await running.publisher.publish(
            topology.dead_letter_exchange,
            "email",
            f'{{"id": "{sent}"}}'.encode(),
            headers={Headers.ATTEMPT: 1, Headers.DEAD_LETTER_REASON: "permanent_failure"},
        )
        ignored = "herald_dead_letters_ignored_total"
        await until(lambda: running.sample(ignored, reason="notification_sent") == 1)
    # Consumers stopped and their channel closed: an unacked message would be back by now.
    assert await queue_depth(infra.amqp_url, topology.dead_letter_queue("email")) == 0
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert (await _row(pool, sent))["status"] == "sent"


async def test_a_dead_letter_of_an_attempt_before_a_redrive_is_not_stored(
    pool: asyncpg.Pool[Any],
) -> None:
    redriven = await notification(pool, status="queued", attempts=3, first_attempt=4)
    assert await store_dead_letters(pool, [letter(redriven, 2)]) == ["older_generation"]
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    row = await _row(pool, redriven)
    assert (row["status"], row["failure_reason"]) == ("queued", None)


async def test_a_duplicate_dead_letter_after_a_discard_is_not_stored(
    pool: asyncpg.Pool[Any],
) -> None:
    failing = await notification(pool, status="sending", attempts=2)
    assert await store_dead_letters(pool, [letter(failing, 2)]) == [STORED]
    await pool.execute(
        "UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded'"
    )  # an operator discarded it
    assert await store_dead_letters(pool, [letter(failing, 2)]) == ["duplicate"]
    rows = await pool.fetch("SELECT resolution FROM dead_letters")
    assert [r["resolution"] for r in rows] == ["discarded"]  # not reopened


def test_judge_stores_a_letter_for_the_current_attempt_only() -> None:
    current, redriven, sent, canceled, failed = (uuid.uuid4() for _ in range(5))
    states = {
        current: NotificationState("retrying", attempts=3, first_attempt=1),
        redriven: NotificationState("queued", attempts=3, first_attempt=4),
        sent: NotificationState("sent", attempts=1, first_attempt=1),
        canceled: NotificationState("canceled", attempts=0, first_attempt=1),
        failed: NotificationState("failed", attempts=2, first_attempt=1),
    }
    cases = [
        (letter(current, 3), STORED),
        (letter(current, 3), "duplicate"),  # a second copy in the same batch
        (letter(current, 2), "superseded"),  # attempt 3 started since
        (letter(current, None), STORED),  # no attempt number: kept, as before the fence
        (letter(redriven, 3), "older_generation"),
        (letter(redriven, None), STORED),
        (letter(sent, 1), "notification_sent"),
        (letter(sent, None), "notification_sent"),
        (letter(canceled, None), "notification_canceled"),
        (letter(failed, 2), "duplicate"),  # stored before (open or resolved)
        (letter(uuid.uuid4(), 1), STORED),  # unknown notification: kept without one
        (letter(None, None), STORED),
    ]
    verdicts = judge([c for c, _ in cases], states, {(failed, 2)})
    assert verdicts == [expected for _, expected in cases]


async def test_a_late_sent_outcome_of_the_current_generation_turns_failed_into_sent(
    pool: asyncpg.Pool[Any],
) -> None:
    """The broker gave up on attempt 2's message (delivery limit) while its delivery, cut off
    from its channel, still sent it: the dead letter failed the notification first, then the
    sent outcome arrives. The recipient has it: it is sent (and a redrive will not send again).
    An older generation's sent outcome changes nothing."""
    failed = await notification(pool, status="failed", attempts=2)
    await pool.execute(
        "UPDATE notifications SET failure_reason = 'delivery_limit' WHERE id = $1", failed
    )
    await apply_outcomes(pool, [outcome(failed, 2, "sent")])
    row = await _row(pool, failed)
    assert (row["status"], row["failure_reason"]) == ("sent", None)

    redriven_then_failed = await notification(pool, status="failed", attempts=4, first_attempt=4)
    await apply_outcomes(pool, [outcome(redriven_then_failed, 3, "sent")])
    assert (await _row(pool, redriven_then_failed))["status"] == "failed"
