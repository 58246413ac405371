"""The attempt ledger against the real database: claims that survive a lost reply, batches with
several copies of one attempt, leases, the redrive fence, and results that never overwrite."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from herald_common import ledger
from herald_common.ledger import Claim, RecordedResult


async def _notification(pool: asyncpg.Pool[Any], **columns: Any) -> uuid.UUID:
    id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO notifications (id, channel, recipient, content, status, first_attempt)
           VALUES ($1, 'email', 'a@example.com', '{}'::jsonb, $2, $3)""",
        id,
        columns.get("status", "queued"),
        columns.get("first_attempt", 1),
    )
    return id


def _claim(
    id: uuid.UUID, *, redelivered: bool, attempt: int = 1, lease: float = 30, first: int = 1
) -> Claim:
    return Claim(
        id,
        attempt,
        redelivered,
        "smtp",
        token=uuid.uuid4(),
        lease_seconds=lease,
        first_attempt=first,
    )


async def test_a_resubmitted_claim_whose_reply_was_lost_goes_ahead(
    pool: asyncpg.Pool[Any],
) -> None:
    id = await _notification(pool)
    item = _claim(id, redelivered=False)
    [first] = await ledger.claim(pool, [item])
    [again] = await ledger.claim(pool, [item])  # the same delivery, the same token
    assert (first.action, again.action) == ("send", "send")
    assert again.started_at == first.started_at
    assert await pool.fetchval("SELECT count(*) FROM attempts WHERE notification_id = $1", id) == 1


async def test_a_fresh_copy_ahead_of_the_redelivered_original_does_not_hide_it(
    pool: asyncpg.Pool[Any],
) -> None:
    id = await _notification(pool)
    await pool.execute(
        """INSERT INTO attempts (notification_id, attempt, started_at, claim_token,
                                 lease_expires_at)
           VALUES ($1, 1, now() - interval '1 minute', $2, now() - interval '1 second')""",
        id,
        uuid.uuid4(),
    )
    decisions = await ledger.claim(
        pool, [_claim(id, redelivered=False), _claim(id, redelivered=True)]
    )
    assert [d.action for d in decisions] == ["skip", "send"]
    assert decisions[1].possible_duplicate
    row = await pool.fetchrow("SELECT * FROM attempts WHERE notification_id = $1", id)
    assert row is not None
    assert row["possible_duplicate"]


async def test_a_redelivered_copy_waits_while_the_lease_is_live(pool: asyncpg.Pool[Any]) -> None:
    id = await _notification(pool)
    [holder] = await ledger.claim(pool, [_claim(id, redelivered=False)])
    [copy] = await ledger.claim(pool, [_claim(id, redelivered=True)])
    assert (holder.action, copy.action) == ("send", "wait")
    assert copy.wait_until is not None
    assert holder.started_at is not None
    assert 29 < (copy.wait_until - holder.started_at).total_seconds() <= 30.5
    await ledger.record(
        pool, [RecordedResult(id, 1, "sent", None, "smtp", "m-1", datetime.now(UTC))]
    )
    [after] = await ledger.claim(pool, [_claim(id, redelivered=True)])
    assert after.action == "replay"
    assert after.stored is not None
    assert after.stored.provider_message_id == "m-1"


async def test_an_older_generation_is_fenced_off(pool: asyncpg.Pool[Any]) -> None:
    id = await _notification(pool, first_attempt=4)
    stale, current = await ledger.claim(
        pool,
        [
            _claim(id, redelivered=True, attempt=3),
            _claim(id, redelivered=False, attempt=4, first=4),
        ],
    )
    assert (stale.action, current.action) == ("skip", "send")
    assert "redrive" in stale.why


async def test_a_result_never_overwrites_a_finished_attempt(pool: asyncpg.Pool[Any]) -> None:
    id = await _notification(pool)
    await ledger.claim(pool, [_claim(id, redelivered=False)])
    first, second = (
        RecordedResult(id, 1, "transient_failure", "451 later", "smtp", None, datetime.now(UTC)),
        RecordedResult(id, 1, "sent", None, "smtp", "m-2", datetime.now(UTC)),
    )
    assert await ledger.record(pool, [first]) == [None]
    [earlier] = await ledger.record(pool, [second])
    assert earlier is not None
    assert earlier.result == "transient_failure"
    row = await pool.fetchrow("SELECT result, error FROM attempts WHERE notification_id = $1", id)
    assert row is not None
    assert (row["result"], row["error"]) == ("transient_failure", "451 later")


async def test_provider_text_postgres_cannot_store_is_made_safe(pool: asyncpg.Pool[Any]) -> None:
    """A Latin-1 SMTP reply decoded with surrogateescape, and a NUL: stored readable."""
    id = await _notification(pool)
    await ledger.claim(pool, [_claim(id, redelivered=False)])
    error = "550 Empf\udce4nger unbekannt\x00"
    await ledger.record(
        pool,
        [RecordedResult(id, 1, "permanent_failure", error, "smtp", None, datetime.now(UTC))],
    )
    stored = await pool.fetchval("SELECT error FROM attempts WHERE notification_id = $1", id)
    assert stored == "550 Empfänger unbekannt\ufffd"


async def test_a_claim_that_waited_for_the_lock_sees_the_claim_it_waited_for(
    pool: asyncpg.Pool[Any],
) -> None:
    """Two replicas claim copies of one attempt at once: the second waits for the first's lock,
    and must then see its attempt row (a fresh read after the lock), not send or fail."""
    id = await _notification(pool)
    holder = await pool.acquire()
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", id)
        waiting = asyncio.ensure_future(ledger.claim(pool, [_claim(id, redelivered=True)]))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await holder.execute(
            """INSERT INTO attempts (notification_id, attempt, started_at, claim_token,
                                     lease_expires_at)
               VALUES ($1, 1, now(), $2, now() + interval '30 seconds')""",
            id,
            uuid.uuid4(),
        )
        await transaction.commit()
    finally:
        await pool.release(holder)
    [decision] = await waiting
    assert decision.action == "wait"


async def test_a_waiting_copy_sees_the_lease_settle(pool: asyncpg.Pool[Any]) -> None:
    id = await _notification(pool)
    await ledger.claim(pool, [_claim(id, redelivered=False, lease=30)])
    assert not await ledger.lease_settled(pool, id, 1)
    await ledger.record(
        pool, [RecordedResult(id, 1, "sent", None, "smtp", None, datetime.now(UTC))]
    )
    assert await ledger.lease_settled(pool, id, 1)
    other = await _notification(pool)
    await ledger.claim(pool, [_claim(other, redelivered=False, lease=0.2)])
    await asyncio.sleep(0.3)
    assert await ledger.lease_settled(pool, other, 1)


async def test_a_send_that_lost_its_record_flags_the_attempt(pool: asyncpg.Pool[Any]) -> None:
    """A holder past its lease sent, but a taker recorded a failure first: the failure stays on
    record, and the attempt says it may have been delivered (a redrive marks its next try)."""
    id = await _notification(pool)
    await ledger.claim(pool, [_claim(id, redelivered=False)])
    taker = RecordedResult(id, 1, "transient_failure", "421", "smtp", None, datetime.now(UTC))
    holder = RecordedResult(id, 1, "sent", None, "smtp", "m-1", datetime.now(UTC))
    await ledger.record(pool, [taker])
    [earlier] = await ledger.record(pool, [holder])
    assert earlier is not None
    assert earlier.result == "transient_failure"
    row = await pool.fetchrow(
        "SELECT result, maybe_delivered FROM attempts WHERE notification_id = $1", id
    )
    assert row is not None
    assert (row["result"], row["maybe_delivered"]) == ("transient_failure", True)


async def test_an_outage_after_the_results_are_written_does_not_fail_the_batch(
    pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results are committed before the follow-up reads what others recorded first: an
    outage there is ridden out in place, so the batch's callers never record again (and find
    their own results "lost")."""
    mine, theirs = await _notification(pool), await _notification(pool)
    await ledger.claim(pool, [_claim(mine, redelivered=False), _claim(theirs, redelivered=False)])
    await ledger.record(
        pool, [RecordedResult(theirs, 1, "sent", None, "smtp", "m-0", datetime.now(UTC))]
    )
    real, failures = ledger._lost, [ConnectionResetError("the database went away")] * 2

    async def flaky(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args)

    monkeypatch.setattr(ledger, "_lost", flaky)
    results = await ledger.record(
        pool,
        [
            RecordedResult(mine, 1, "sent", None, "smtp", "m-1", datetime.now(UTC)),
            RecordedResult(theirs, 1, "transient_failure", "421", "smtp", None, datetime.now(UTC)),
        ],
    )
    assert not failures
    assert results[0] is None
    assert results[1] is not None
    assert results[1].result == "sent"

    # An outage that outlasts the tries fails the batch after its results were written: its
    # callers record again, and find their own results, recorded, not someone else's.
    third = await _notification(pool)
    await ledger.claim(pool, [_claim(third, redelivered=False)])
    own = RecordedResult(third, 1, "sent", None, "smtp", "m-3", datetime.now(UTC))
    other = RecordedResult(theirs, 1, "transient_failure", "421", "smtp", None, datetime.now(UTC))

    async def down(*args: Any) -> Any:
        raise ConnectionResetError("down for good")

    monkeypatch.setattr(ledger, "_lost", down)
    with pytest.raises(ConnectionResetError):
        await ledger.record(pool, [own, other])
    monkeypatch.setattr(ledger, "_lost", real)
    again = await ledger.record(pool, [own, other])
    assert again[0] is None
    assert again[1] is not None
    assert again[1].result == "sent"
    row = await pool.fetchrow(
        "SELECT result, maybe_delivered FROM attempts WHERE notification_id = $1", third
    )
    assert row is not None
    assert (row["result"], row["maybe_delivered"]) == ("sent", False)
