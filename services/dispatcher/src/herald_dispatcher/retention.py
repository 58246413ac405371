"""Retention: what is older than ``HERALD_RETENTION_DAYS`` is deleted, in small batches.

- Notifications in a final status (``sent``, ``failed``, ``canceled``) created before the cut-off,
  with their attempts and dead letters (``ON DELETE CASCADE``); one not final yet (scheduled
  further ahead than the retention, or still retrying) waits until it is.
- Dead letters and dead outcomes stored before the cut-off, keyed batches
  (``notification_batches``) made before it, and campaigns finished before it (their recipients
  first, a batch at a time, so no statement deletes a million rows).
- With ``HERALD_REDACT_AFTER_DAYS``, earlier: a final notification's recipient and content are
  blanked (``redacted_at``), and so is its dead letters' copy of the message; the recipients of
  campaigns finished before that cut-off are deleted.

Every batch is its own short transaction of at most ``HERALD_RETENTION_BATCH_SIZE`` rows found on
an index, locked with ``SKIP LOCKED`` (a row a delivery or an operator holds is left for the next
pass, never waited for), so nothing holds a long lock on the hot tables. A pass runs batches
until one comes back short, then waits ``HERALD_RETENTION_INTERVAL``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from herald_common.periodic import Periodic
from herald_common.statuses import FINAL

from .metrics import DispatcherMetrics

log = structlog.get_logger("herald.dispatcher.retention")

REDACT_TASK = "redact"
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
_NIL = uuid.UUID(int=0)

_DELETE_NOTIFICATIONS = """
DELETE FROM notifications WHERE id IN (
    SELECT id FROM notifications
    WHERE created_at < $1 AND status = ANY($3::text[])
    ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
"""

_DELETE_DEAD_LETTERS = """
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM dead_letters WHERE dead_lettered_at < $1
    ORDER BY dead_lettered_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
"""

_DELETE_DEAD_OUTCOMES = """
DELETE FROM dead_outcomes WHERE id IN (
    SELECT id FROM dead_outcomes WHERE dead_lettered_at < $1
    ORDER BY dead_lettered_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
"""

_DELETE_BATCHES = """
DELETE FROM notification_batches WHERE idempotency_key IN (
    SELECT idempotency_key FROM notification_batches WHERE created_at < $1
    LIMIT $2 FOR UPDATE SKIP LOCKED)
"""


@dataclass
class RetentionPass:
    """What one pass did: rows deleted by table, notifications redacted."""

    deleted: dict[str, int] = field(default_factory=dict)
    redacted: int = 0


class Retention(Periodic):
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        metrics: DispatcherMetrics,
        *,
        retention_days: float,
        redact_after_days: float | None,
        batch_size: int,
        interval: float,
    ) -> None:
        super().__init__(interval, "retention")
        self._pool = pool
        self._metrics = metrics
        self._retention = timedelta(days=retention_days)
        self._redaction = None if redact_after_days is None else timedelta(days=redact_after_days)
        self._batch = batch_size

    async def tick(self) -> None:
        done = await self.run_pass()
        if done.redacted or any(done.deleted.values()):
            log.info("retention pass", deleted=done.deleted, redacted=done.redacted)

    async def run_pass(self, now: datetime | None = None) -> RetentionPass:
        now = now or datetime.now(UTC)
        cutoff = now - self._retention
        done = RetentionPass()
        if self._redaction is not None:
            done.redacted = await self._redact_all(now - self._redaction)
            self._metrics.retention_redacted.inc(done.redacted)
            done.deleted["campaign_recipients"] = await self._campaign_recipients(
                now - self._redaction
            )
        steps = {
            "notifications": lambda: self._delete(_DELETE_NOTIFICATIONS, cutoff, list(FINAL)),
            "dead_letters": lambda: self._delete(_DELETE_DEAD_LETTERS, cutoff),
            "dead_outcomes": lambda: self._delete(_DELETE_DEAD_OUTCOMES, cutoff),
            "notification_batches": lambda: self._delete(_DELETE_BATCHES, cutoff),
        }
        for table, step in steps.items():
            done.deleted[table] = await self._until_short(step)
        recipients = await self._campaign_recipients(cutoff)
        done.deleted["campaign_recipients"] = (
            done.deleted.get("campaign_recipients", 0) + recipients
        )
        done.deleted["campaigns"] = await self._until_short(lambda: self._campaigns(cutoff))
        for table, count in done.deleted.items():
            self._metrics.retention_deleted.labels(table).inc(count)
        return done

    async def _until_short(self, step: Any) -> int:
        """Run a batch step until it does less than a full batch; the rows it did in all."""
        total = 0
        while True:
            count: int = await step()
            total += count
            if count < self._batch:
                return total

    async def _delete(self, statement: str, cutoff: datetime, *args: Any) -> int:
        result = await self._pool.execute(statement, cutoff, self._batch, *args)
        return int(result.split()[-1])

    async def _redact_all(self, cutoff: datetime) -> int:
        total = 0
        while True:
            seen, redacted = await self._redact(cutoff)
            total += redacted
            if seen < self._batch:
                return total

    async def _redact(self, cutoff: datetime) -> tuple[int, int]:
        """Blank the next batch of final notifications created before ``cutoff``, in creation
        order from where the last batch stopped; (notifications looked at, redacted). A
        notification not final when its turn comes keeps its content until it is deleted."""
        async with self._pool.acquire() as connection, connection.transaction():
            mark = await connection.fetchrow(
                "SELECT created_at, id FROM retention_progress WHERE task = $1 FOR UPDATE",
                REDACT_TASK,
            )
            since = (mark["created_at"], mark["id"]) if mark else (_BEGINNING, _NIL)
            rows = await connection.fetch(
                """SELECT id, created_at, status FROM notifications
                   WHERE created_at < $1 AND (created_at, id) > ($2, $3)
                   ORDER BY created_at, id LIMIT $4""",
                cutoff,
                since[0],
                since[1],
                self._batch,
            )
            if not rows:
                return 0, 0
            final = [r["id"] for r in rows if r["status"] in FINAL]
            redacted = await connection.fetch(
                """UPDATE notifications SET recipient = '', content = '{}'::jsonb,
                       redacted_at = now()
                   WHERE id IN (SELECT id FROM notifications
                                WHERE id = ANY($1::uuid[]) AND redacted_at IS NULL
                                  AND status = ANY($2::text[])
                                ORDER BY id FOR UPDATE SKIP LOCKED)
                   RETURNING id""",
                final,
                list(FINAL),
            )
            await connection.execute(
                """UPDATE dead_letters SET body = ''::bytea
                   WHERE notification_id = ANY($1::uuid[]) AND body <> ''::bytea""",
                [r["id"] for r in redacted],
            )
            last = rows[-1]
            await connection.execute(
                """INSERT INTO retention_progress (task, created_at, id) VALUES ($1, $2, $3)
                   ON CONFLICT (task) DO UPDATE SET created_at = $2, id = $3""",
                REDACT_TASK,
                last["created_at"],
                last["id"],
            )
        return len(rows), len(redacted)

    async def _campaign_recipients(self, cutoff: datetime) -> int:
        """Delete the recipients of campaigns finished before ``cutoff``, a batch at a time."""
        total = 0
        while True:
            async with self._pool.acquire() as connection:
                result = await connection.execute(
                    """DELETE FROM campaign_recipients r
                       USING (SELECT c.id FROM campaigns c
                              WHERE c.finished_at IS NOT NULL AND c.finished_at < $1
                                AND EXISTS (SELECT 1 FROM campaign_recipients x
                                            WHERE x.campaign_id = c.id)
                              ORDER BY c.finished_at LIMIT 1) c,
                             LATERAL (SELECT row_number FROM campaign_recipients y
                                      WHERE y.campaign_id = c.id
                                      ORDER BY row_number LIMIT $2) y
                       WHERE r.campaign_id = c.id AND r.row_number = y.row_number""",
                    cutoff,
                    self._batch,
                )
            count = int(result.split()[-1])
            total += count
            if count == 0:
                return total

    async def _campaigns(self, cutoff: datetime) -> int:
        result = await self._pool.execute(
            """DELETE FROM campaigns WHERE id IN (
                   SELECT id FROM campaigns c
                   WHERE finished_at IS NOT NULL AND finished_at < $1
                     AND NOT EXISTS (SELECT 1 FROM campaign_recipients r
                                     WHERE r.campaign_id = c.id)
                   ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
            cutoff,
            self._batch,
        )
        return int(result.split()[-1])
