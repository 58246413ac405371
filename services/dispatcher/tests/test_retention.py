"""Retention: old notifications (with their attempts and dead letters), dead letters, dead
outcomes, keyed batches and finished campaigns are deleted in batches; recipients and content are
blanked earlier when asked; nothing that is not final is touched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from herald_dispatcher.metrics import DispatcherMetrics
from herald_dispatcher.retention import Retention
from herald_dispatcher.settings import DispatcherSettings

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _retention(
    pool: asyncpg.Pool[Any], *, redact: float | None = None, batch: int = 3
) -> tuple[Retention, DispatcherMetrics]:
    metrics = DispatcherMetrics.create(CollectorRegistry())
    retention = Retention(
        pool, metrics, retention_days=30, redact_after_days=redact, batch_size=batch, interval=60
    )
    return retention, metrics


async def _notification(pool: asyncpg.Pool[Any], status: str, age_days: float) -> uuid.UUID:
    id = uuid.uuid4()
    created = NOW - timedelta(days=age_days)
    await pool.execute(
        """INSERT INTO notifications (id, channel, recipient, content, status, attempts,
                                      created_at, updated_at)
           VALUES ($1, 'email', 'ada@example.com', '{"subject": "Hi", "text": "x"}'::jsonb, $2,
                   1, $3, $3)""",
        id,
        status,
        created,
    )
    await pool.execute(
        """INSERT INTO attempts (notification_id, attempt, provider, started_at, finished_at,
                                 result, lease_expires_at)
           VALUES ($1, 1, 'smtp', $2, $2, 'sent', $2)""",
        id,
        created,
    )
    return id


async def _dead_letter(
    pool: asyncpg.Pool[Any], notification_id: uuid.UUID | None, age_days: float
) -> uuid.UUID:
    id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO dead_letters (id, notification_id, channel, reason, body, headers,
                                     dead_lettered_at)
           VALUES ($1, $2, 'email', 'permanent_failure', '{"to": "ada@example.com"}'::bytea,
                   '{}', $3)""",
        id,
        notification_id,
        NOW - timedelta(days=age_days),
    )
    return id


async def _count(pool: asyncpg.Pool[Any], table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_old_final_notifications_go_with_their_attempts_and_dead_letters(
    pool: asyncpg.Pool[Any],
) -> None:
    old = [await _notification(pool, status, 31) for status in ("sent", "failed", "canceled")]
    old += [await _notification(pool, "sent", 40) for _ in range(4)]  # more than a batch
    letter_of_old = await _dead_letter(pool, old[1], 31)
    kept_recent = await _notification(pool, "sent", 29)
    kept_scheduled = await _notification(pool, "scheduled", 31)  # not final: waits
    kept_retrying = await _notification(pool, "retrying", 45)
    # Created long ago, final only lately (sent at a far send_at, or redriven): kept its full age.
    kept_lately_final = await _notification(pool, "failed", 60)
    await pool.execute(
        "UPDATE notifications SET updated_at = $2 WHERE id = $1",
        kept_lately_final,
        NOW - timedelta(days=2),
    )
    malformed_old = await _dead_letter(pool, None, 31)
    malformed_new = await _dead_letter(pool, None, 1)
    retention, metrics = _retention(pool)

    done = await retention.run_pass(NOW)

    assert done.deleted["notifications"] == len(old)
    left = {r["id"] for r in await pool.fetch("SELECT id FROM notifications")}
    assert left == {kept_recent, kept_scheduled, kept_retrying, kept_lately_final}
    assert await _count(pool, "attempts") == 4  # the kept ones' only
    dead = {r["id"] for r in await pool.fetch("SELECT id FROM dead_letters")}
    assert dead == {malformed_new}
    assert letter_of_old not in dead
    assert malformed_old not in dead
    counted = metrics.retention_deleted.labels("notifications")._value.get()
    assert counted == len(old)
    # A second pass finds nothing more.
    again = await retention.run_pass(NOW)
    assert again.deleted["notifications"] == 0


async def test_redaction_blanks_final_notifications_and_their_dead_letters_copy(
    pool: asyncpg.Pool[Any],
) -> None:
    sent = [await _notification(pool, "sent", 8) for _ in range(5)]
    failed = await _notification(pool, "failed", 9)
    letter = await _dead_letter(pool, failed, 9)
    await pool.execute(
        """UPDATE notifications SET last_error = '550 5.1.1 <ada@example.com>: no such user'
           WHERE id = $1""",
        failed,
    )
    await pool.execute(
        """UPDATE attempts SET error = 'rejected +14155550123 (ada@example.com)'
           WHERE notification_id = $1""",
        failed,
    )
    queued = await _notification(pool, "queued", 8)  # not final: left whole
    recent = await _notification(pool, "sent", 6)
    retention, metrics = _retention(pool, redact=7, batch=2)

    done = await retention.run_pass(NOW)

    assert done.redacted == 6
    rows = {
        r["id"]: r
        for r in await pool.fetch("SELECT id, recipient, content, redacted_at FROM notifications")
    }
    for id in [*sent, failed]:
        assert rows[id]["recipient"] == "", id
        assert rows[id]["content"] in ("{}", {}), id
        assert rows[id]["redacted_at"] is not None
    for id in (queued, recent):
        assert rows[id]["recipient"] == "ada@example.com"
        assert rows[id]["redacted_at"] is None
    assert await pool.fetchval("SELECT body FROM dead_letters WHERE id = $1", letter) == b""
    # Provider replies quote the recipient: masked, the rest of the text kept.
    assert await pool.fetchval("SELECT last_error FROM notifications WHERE id = $1", failed) == (
        "550 5.1.1 <***>: no such user"
    )
    assert await pool.fetchval("SELECT error FROM attempts WHERE notification_id = $1", failed) == (
        "rejected *** (***)"
    )
    assert metrics.retention_redacted._value.get() == 6
    # It goes on from where it stopped: nothing is redacted twice.
    later = await _notification(pool, "sent", 7.5)
    assert (await retention.run_pass(NOW)).redacted == 1
    assert await pool.fetchval("SELECT recipient FROM notifications WHERE id = $1", later) == ""


async def test_finished_campaigns_lose_their_recipients_then_themselves(
    pool: asyncpg.Pool[Any],
) -> None:
    async def campaign(finished_days: float | None) -> uuid.UUID:
        id = uuid.uuid4()
        finished = None if finished_days is None else NOW - timedelta(days=finished_days)
        await pool.execute(
            """INSERT INTO campaigns (id, project, name, channel, content, status, recipients,
                                      finished_at)
               VALUES ($1, 'default', 'c', 'email', '{}'::jsonb, $2, 7, $3)""",
            id,
            "processing" if finished is None else "completed",
            finished,
        )
        await pool.execute(
            """INSERT INTO campaign_recipients (campaign_id, row_number, recipient)
               SELECT $1, n, 'r' || n || '@example.com' FROM generate_series(2, 8) n""",
            id,
        )
        return id

    old, redactable, running = await campaign(31), await campaign(10), await campaign(None)
    retention, _ = _retention(pool, redact=7, batch=3)

    done = await retention.run_pass(NOW)

    assert done.deleted["campaigns"] == 1
    assert done.deleted["campaign_recipients"] == 14
    assert {r["id"] for r in await pool.fetch("SELECT id FROM campaigns")} == {redactable, running}
    left = await pool.fetch("SELECT campaign_id, count(*) AS n FROM campaign_recipients GROUP BY 1")
    assert {r["campaign_id"]: r["n"] for r in left} == {running: 7}
    assert old not in {r["campaign_id"] for r in left}


def test_redaction_must_come_before_deletion() -> None:
    with pytest.raises(ValueError, match="redact_after_days must be less"):
        DispatcherSettings(retention_days=7, redact_after_days=7)


async def test_old_keyed_batches_go_by_project_and_key(pool: asyncpg.Pool[Any]) -> None:
    """A key reused by another project is another batch: only the old one is deleted."""
    for project, age in (("a", 31), ("b", 1)):
        await pool.execute(
            """INSERT INTO notification_batches (project, idempotency_key, request_hash,
                                                 notification_ids, created_at)
               VALUES ($1, 'order-42', 'h', '{}', $2)""",
            project,
            NOW - timedelta(days=age),
        )
    retention, _ = _retention(pool)
    assert (await retention.run_pass(NOW)).deleted["notification_batches"] == 1
    assert [r["project"] for r in await pool.fetch("SELECT project FROM notification_batches")] == [
        "b"
    ]


async def test_a_locked_row_holds_the_redaction_watermark_for_the_next_pass(
    pool: asyncpg.Pool[Any],
) -> None:
    ids = [await _notification(pool, "sent", 10 - i * 0.01) for i in range(4)]
    retention, _ = _retention(pool, redact=7, batch=10)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", ids[1])
        assert (await retention.run_pass(NOW)).redacted == 3
    assert (await retention.run_pass(NOW)).redacted == 1  # the one that was locked
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE redacted_at IS NULL") == 0
