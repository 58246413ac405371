"""Per-notification database work does not grow with the tables.

The hot statements (the channel services' claim and record, the dispatcher's outcomes, the
outbox) are first run on nearly empty tables, on one pooled connection, more than the five times
after which PostgreSQL may switch a prepared statement to a generic plan. The tables then grow to
100,000 notifications, without ANALYZE (as on a server without autovacuum, or between its runs),
and the same statements run again on the same connection: the rows PostgreSQL reads for them must
stay a small multiple of the notifications they touch. A plan made for the empty tables and kept
(a full scan of ``notifications`` joined to ``unnest($1)``) reads every row of the table instead.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
from prometheus_client import CollectorRegistry

from herald_api.database import Database
from herald_api.dead_letters import DeadLetterStore
from herald_api.notifications import NotificationStore
from herald_common import control, ledger, outbox, tallies
from herald_common.db import create_pool
from herald_common.ledger import Claim, RecordedResult
from herald_common.schemas import AttemptOutcome
from herald_common.tallies import MinuteTally
from herald_common.topology import Topology
from herald_dispatcher.metrics import DispatcherMetrics
from herald_dispatcher.outcomes import apply_outcomes
from herald_dispatcher.retention import Retention
from herald_dispatcher.sampler import MetricsSampler

GROWN_TO = 100_000
BATCH = 20
ROUNDS = 8
"""Runs of every statement while the tables are small: past PostgreSQL's five custom plans."""

ROWS_PER_NOTIFICATION = 20
"""A generous bound: the hot path reads about seven rows per notification through its indexes; one
full scan of the grown table would add 100,000 / BATCH = 5,000."""


async def _hot_path(pool: asyncpg.Pool[Any]) -> int:
    """One batch through everything a notification meets after it is accepted; returns how
    many notifications it touched."""
    ids = [uuid.uuid4() for _ in range(BATCH)]
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            """INSERT INTO notifications (id, channel, recipient, content, status)
               SELECT id, 'email', 'someone@example.com', '{}'::jsonb, 'queued'
               FROM unnest($1::uuid[]) AS u(id)""",
            ids,
        )
        rows = await outbox.insert(
            connection, [outbox.OutboxMessage(i, "email", b"{}") for i in ids], delay=0
        )
        await outbox.delete(connection, rows)
    claims = [
        Claim(i, 1, False, "smtp", token=uuid.uuid4(), lease_seconds=30, first_attempt=1)
        for i in ids
    ]
    decisions = await ledger.claim(pool, claims)
    assert [d.action for d in decisions] == ["send"] * BATCH
    now = datetime.now(UTC)
    await ledger.record(
        pool, [RecordedResult(i, 1, "sent", None, "smtp", f"<{i}>", now) for i in ids]
    )
    await apply_outcomes(
        pool,
        [
            AttemptOutcome(
                notification_id=i,
                channel="email",
                attempt=1,
                result="sent",
                disposition="sent",
                provider="smtp",
                started_at=now,
                finished_at=now,
            )
            for i in ids
        ],
    )
    return BATCH


async def _flush_statistics(executor: asyncpg.Pool[Any] | asyncpg.Connection[Any]) -> None:
    """Make a backend's table counters visible to the others: it flushes them as it goes idle
    after this statement, before it answers (otherwise it may hold them for up to 10 s)."""
    await executor.execute("SELECT pg_stat_force_next_flush()")


async def _rows_read(database: asyncpg.Connection[Any]) -> int:
    await database.execute("SELECT pg_stat_clear_snapshot()")
    rows: int = await database.fetchval(
        """SELECT sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint
           FROM pg_stat_user_tables"""
    )
    return rows


async def _grow(database: asyncpg.Connection[Any]) -> None:
    await database.execute(
        """INSERT INTO notifications (id, channel, recipient, content, status, attempts)
           SELECT gen_random_uuid(), 'email', 'someone@example.com', '{}'::jsonb, 'sent', 1
           FROM generate_series(1, $1)""",
        GROWN_TO,
    )
    await database.execute(
        """INSERT INTO attempts (notification_id, attempt, provider, started_at, finished_at,
                                 result, lease_expires_at)
           SELECT n.id, 1, 'smtp', now(), now(), 'sent', now() FROM notifications n
           WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.notification_id = n.id)"""
    )
    await _flush_statistics(database)


async def _grow_resolved_dead_letters(database: asyncpg.Connection[Any]) -> None:
    """As many resolved dead letters as notifications: what reads of the open ones must skip."""
    await database.execute(
        """INSERT INTO dead_letters (id, notification_id, channel, reason, body, headers,
                                     dead_lettered_at, resolved_at, resolution)
           SELECT gen_random_uuid(), NULL, 'email', 'permanent_failure', '', '{}', now(),
                  now(), 'discarded'
           FROM generate_series(1, $1)""",
        GROWN_TO,
    )


async def test_rows_read_per_notification_stay_flat_as_the_tables_grow(database_url: str) -> None:
    database: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    # One connection, so that every statement is prepared once and reused on it.
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        for _ in range(ROUNDS):
            await _hot_path(pool)
        await _flush_statistics(pool)
        await _grow(database)
        before = await _rows_read(database)
        touched = 0
        for _ in range(ROUNDS):
            touched += await _hot_path(pool)
        await _flush_statistics(pool)
        read = await _rows_read(database) - before
        assert read / touched <= ROWS_PER_NOTIFICATION, (
            f"{read:,} rows read for {touched} notifications with {GROWN_TO:,} in the table"
        )
        assert await database.fetchval("SELECT count(*) FROM notifications") == GROWN_TO + 2 * (
            ROUNDS * BATCH
        )
    finally:
        await pool.close()
        await database.close()


SAMPLE_ROWS_BOUND = 1_000
"""The dispatcher's samples and GET /v1/queues read the backlogs they count, never the tables:
with nothing scheduled, due or waiting, a sample reads next to no rows whatever the tables hold."""


async def test_samples_and_the_queue_overview_stay_on_their_indexes(database_url: str) -> None:
    database: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    metrics = DispatcherMetrics.create(CollectorRegistry())
    sampler = MetricsSampler(pool, cast(Any, None), Topology("plans"), metrics, interval=60)
    try:
        for _ in range(ROUNDS):  # prepared and planned while the tables are empty
            await sampler.sample_database()
            await _overview_queries(pool)
        await _grow(database)
        await _grow_resolved_dead_letters(database)
        await _flush_statistics(database)
        before = await _rows_read(database)
        for _ in range(ROUNDS):
            await sampler.sample_database()
            await _overview_queries(pool)
        await _flush_statistics(pool)
        read = await _rows_read(database) - before
        assert read <= SAMPLE_ROWS_BOUND, f"{read:,} rows read by {ROUNDS} samples"
        assert metrics.scheduled._value.get() == 0
    finally:
        await pool.close()
        await database.close()


async def _overview_queries(pool: asyncpg.Pool[Any]) -> None:
    """What GET /v1/queues reads of the database."""
    async with pool.acquire() as connection:
        await control.paused_channels(connection)
        await control.live_instances(connection)
        await control.open_dead_letters(connection)
        await control.outbox_lag(connection, 100_000)


async def test_a_retention_pass_reads_what_it_removes_not_the_tables(database_url: str) -> None:
    """Retention and redaction walk their indexes from the oldest rows: on grown tables with
    nothing old enough, a pass reads next to nothing; with a few old rows, about those."""
    database: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    metrics = DispatcherMetrics.create(CollectorRegistry())
    retention = Retention(
        pool, metrics, retention_days=30, redact_after_days=7, batch_size=100, interval=60
    )
    try:
        for _ in range(ROUNDS):  # prepared and planned while the tables are empty
            await retention.run_pass()
        await _grow(database)
        await database.execute(
            """INSERT INTO notifications (id, channel, recipient, content, status, created_at,
                                          updated_at)
               SELECT gen_random_uuid(), 'email', 'old@example.com', '{}'::jsonb, 'sent',
                      now() - interval '40 days', now() - interval '40 days'
               FROM generate_series(1, 50)"""
        )
        await _flush_statistics(database)
        before = await _rows_read(database)
        done = await retention.run_pass()
        for _ in range(ROUNDS - 1):
            await retention.run_pass()
        await _flush_statistics(pool)
        read = await _rows_read(database) - before
        assert done.deleted["notifications"] == 50
        assert done.redacted == 50
        assert read <= SAMPLE_ROWS_BOUND, f"{read:,} rows read by {ROUNDS} retention passes"
    finally:
        await pool.close()
        await database.close()


CONSOLE_ROWS_BOUND = 2_000
"""The console's reads on grown tables: what they return (a page of 50 at most, a handful of
groups) and the index entries on the way, never a table."""


async def test_the_console_search_groups_and_figures_stay_on_their_indexes(
    database_url: str,
) -> None:
    database: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    notifications = NotificationStore(
        Database(pool, 5.0), *cast(Any, (None, None, None, MinuteTally(pool)))
    )
    dead_letters = DeadLetterStore(Database(pool, 5.0), cast(Any, None), max_redrive=100)
    campaign = uuid.uuid4()
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)

    async def console_reads() -> None:
        for project in (None, "default"):
            await notifications.page(project=project, status=None, channel=None, limit=50,
                                     cursor=None, recipient="target@example.com")  # fmt: skip
            await notifications.page(project=project, status=None, channel=None, limit=50,
                                     cursor=None, campaign=campaign)  # fmt: skip
            await notifications.page(project=project, status="failed", channel="email", limit=50,
                                     cursor=None, created_before=an_hour_ago)  # fmt: skip
            await dead_letters.groups(project=project)
            async with pool.acquire() as connection:
                await tallies.last_hour(connection, project)

    try:
        for _ in range(ROUNDS):  # prepared and planned while the tables are empty
            await console_reads()
        await _grow(database)
        await _grow_resolved_dead_letters(database)
        await database.execute(
            """INSERT INTO notifications (id, channel, recipient, content, status, campaign_id)
               SELECT gen_random_uuid(), 'email', 'target@example.com', '{}'::jsonb, 'queued',
                      CASE WHEN i % 2 = 0 THEN $1::uuid END
               FROM generate_series(1, 10) i""",
            campaign,
        )
        await database.execute(
            """INSERT INTO notification_minutes (minute, project, channel, lane, accepted)
               SELECT date_trunc('minute', now()) - make_interval(mins => i), 'default', 'email',
                      'normal', 1
               FROM generate_series(1, 2 * 24 * 60) i"""
        )
        await _flush_statistics(database)
        before = await _rows_read(database)
        for _ in range(ROUNDS):
            await console_reads()
        await _flush_statistics(pool)
        read = await _rows_read(database) - before
        assert read <= CONSOLE_ROWS_BOUND * ROUNDS, f"{read:,} rows read by {ROUNDS} rounds"
        found = await notifications.page(project="default", status=None, channel=None, limit=50,
                                          cursor=None, recipient="target@example.com")  # fmt: skip
        assert len(found.items) == 10
    finally:
        await pool.close()
        await database.close()
