"""Retention: what is older than ``HERALD_RETENTION_DAYS`` is deleted, in small batches.

- Notifications in a final status (``sent``, ``failed``, ``canceled``) created *and* last changed
  before the cut-off, with their attempts and dead letters (``ON DELETE CASCADE``); one not final
  yet (scheduled further ahead than the retention, or still retrying) waits until it is, and one
  that became final lately (sent at a far ``send_at``, redriven) is kept its full age.
- Dead letters and dead outcomes stored before the cut-off, keyed batches
  (``notification_batches``) made before it, and campaigns finished before it (their recipients
  first, a batch at a time, so no statement deletes a million rows).
- With ``HERALD_REDACT_AFTER_DAYS``, earlier: a final notification's recipient and content are
  blanked (``redacted_at``), and so is its dead letters' copy of the message; addresses and phone
  numbers in its error texts (provider replies quote them) are masked; the recipients of
  campaigns finished before that cut-off are deleted.

Every batch is its own short transaction of at most ``HERALD_RETENTION_BATCH_SIZE`` rows found on
an index, locked with ``SKIP LOCKED`` (a row a delivery or an operator holds is left for the next
pass, never waited for), so nothing holds a long lock on the hot tables. Within a pass each walk
goes on from where its last batch stopped. A pass runs batches until one comes back short, then
waits ``HERALD_RETENTION_INTERVAL``. Deleted rows leave dead index entries until (auto)vacuum
clears them: retention relies on autovacuum, as production runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
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

# Per final status, on notifications_status_newest (status, created_at, id), from where the last
# batch of the pass stopped: rows of another status and rows already deleted are not walked again.
_DELETE_NOTIFICATIONS = """
WITH gone AS (
    DELETE FROM notifications WHERE id IN (
        SELECT id FROM notifications
        WHERE status = $3 AND created_at < $1 AND (created_at, id) > ($4, $5)
          AND updated_at < $1
        ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING created_at, id)
SELECT count(*) AS n, (array_agg(created_at ORDER BY created_at DESC, id DESC))[1] AS created_at,
       (array_agg(id ORDER BY created_at DESC, id DESC))[1] AS id
FROM gone
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
DELETE FROM notification_batches WHERE (project, idempotency_key) IN (
    SELECT project, idempotency_key FROM notification_batches WHERE created_at < $1
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
"""


def _masked(column: str) -> str:
    """SQL masking email addresses and phone numbers in ``column`` (text), as the logs do:
    provider replies quote them (``550 5.1.1 <bob@example.com> unknown``)."""
    emails = r"""'[^[:space:]<>()"'',;]+@[^[:space:]<>()"'',;]+'"""
    phones = r"""'\+?[0-9]([ .-]?[0-9]){8,15}'"""  # nine digits or more, as in the logs
    return f"regexp_replace(regexp_replace({column}, {emails}, '***', 'g'), {phones}, '***', 'g')"


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
            self._count(
                done, "campaign_recipients", await self._campaign_recipients(now - self._redaction)
            )
        deleted = 0
        for status in FINAL:
            deleted += await self._delete_notifications(status, cutoff)
        self._count(done, "notifications", deleted)
        steps: dict[str, Callable[[], Awaitable[int]]] = {
            "dead_letters": lambda: self._delete(_DELETE_DEAD_LETTERS, cutoff),
            "dead_outcomes": lambda: self._delete(_DELETE_DEAD_OUTCOMES, cutoff),
            "notification_batches": lambda: self._delete(_DELETE_BATCHES, cutoff),
        }
        for table, step in steps.items():
            self._count(done, table, await self._until_short(step))
        self._count(done, "campaign_recipients", await self._campaign_recipients(cutoff))
        self._count(done, "campaigns", await self._until_short(lambda: self._campaigns(cutoff)))
        return done

    def _count(self, done: RetentionPass, table: str, count: int) -> None:
        """Counted as each step ends: a later step failing does not lose the earlier counts."""
        done.deleted[table] = done.deleted.get(table, 0) + count
        self._metrics.retention_deleted.labels(table).inc(count)

    async def _until_short(self, step: Callable[[], Awaitable[int]]) -> int:
        """Run a batch step until it does less than a full batch; the rows it did in all."""
        total = 0
        while True:
            count = await step()
            total += count
            if count < self._batch:
                return total

    async def _delete(self, statement: str, cutoff: datetime) -> int:
        result: str = await self._pool.execute(statement, cutoff, self._batch)
        return int(result.split()[-1])

    async def _delete_notifications(self, status: str, cutoff: datetime) -> int:
        total, after = 0, (_BEGINNING, _NIL)
        while True:
            row = await self._pool.fetchrow(
                _DELETE_NOTIFICATIONS, cutoff, self._batch, status, *after
            )
            assert row is not None
            total += int(row["n"])
            if row["n"] < self._batch:
                return total
            after = (row["created_at"], row["id"])

    async def _redact_all(self, cutoff: datetime) -> int:
        total = 0
        while True:
            passed, redacted = await self._redact(cutoff)
            total += redacted
            if passed < self._batch:
                return total

    async def _redact(self, cutoff: datetime) -> tuple[int, int]:
        """Blank the next batch of final notifications created before ``cutoff``, in creation
        order from where the last batch stopped; (notifications the watermark passed, redacted).
        A notification not final when its turn comes keeps its content until it is deleted; one
        locked by someone else (a redrive, a claim) stops the watermark before it, for the next
        pass to try again."""
        async with self._pool.acquire() as connection, connection.transaction():
            # Index lookups by notification only: without statistics (autovacuum off, or a
            # table never analyzed) PostgreSQL guesses ~200 attempts or dead letters per
            # notification and plans a hash join over a scan of the whole table; a few probes
            # per notification are what these statements need, whatever the statistics say.
            await connection.execute(
                "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;"
                " SET LOCAL enable_mergejoin = off"
            )
            mark = await connection.fetchrow(
                "SELECT created_at, id FROM retention_progress WHERE task = $1 FOR UPDATE",
                REDACT_TASK,
            )
            since = (mark["created_at"], mark["id"]) if mark else (_BEGINNING, _NIL)
            rows = await connection.fetch(
                """SELECT id, created_at, status, redacted_at FROM notifications
                   WHERE created_at < $1 AND (created_at, id) > ($2, $3)
                   ORDER BY created_at, id LIMIT $4""",
                cutoff,
                since[0],
                since[1],
                self._batch,
            )
            if not rows:
                return 0, 0
            final = [r["id"] for r in rows if r["status"] in FINAL and r["redacted_at"] is None]
            redacted = await connection.fetch(
                f"""UPDATE notifications SET recipient = '', content = '{{}}'::jsonb,
                       last_error = {_masked("last_error")}, redacted_at = now()
                   WHERE id IN (SELECT id FROM notifications
                                WHERE id = ANY($1::uuid[]) AND redacted_at IS NULL
                                  AND status = ANY($2::text[])
                                ORDER BY id FOR UPDATE SKIP LOCKED)
                   RETURNING id""",
                final,
                list(FINAL),
            )
            done = [r["id"] for r in redacted]
            await connection.execute(
                f"""UPDATE dead_letters d SET body = ''::bytea,
                       last_error = {_masked("d.last_error")},
                       headers = ({_masked("d.headers::text")})::jsonb
                   FROM unnest($1::uuid[]) AS u(id) WHERE d.notification_id = u.id""",
                done,
            )
            await connection.execute(
                f"""UPDATE attempts a SET error = {_masked("a.error")},
                       provider_hops = ({_masked("a.provider_hops::text")})::jsonb
                   FROM unnest($1::uuid[]) AS u(id) WHERE a.notification_id = u.id""",
                done,
            )
            # The watermark stops before the first row that should have been redacted and was
            # locked elsewhere (SKIP LOCKED): the next pass takes it.
            left = set(final) - set(done)
            passed = next((i for i, r in enumerate(rows) if r["id"] in left), len(rows))
            if passed:
                last = rows[passed - 1]
                await connection.execute(
                    """INSERT INTO retention_progress (task, created_at, id) VALUES ($1, $2, $3)
                       ON CONFLICT (task) DO UPDATE SET created_at = $2, id = $3""",
                    REDACT_TASK,
                    last["created_at"],
                    last["id"],
                )
        return passed, len(done)

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
                              ORDER BY c.finished_at LIMIT 1
                              FOR UPDATE OF c SKIP LOCKED) c,
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
