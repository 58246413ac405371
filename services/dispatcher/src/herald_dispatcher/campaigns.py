"""Campaigns in the dispatcher: fanning them out, canceling them, and marking them finished.

Fan-out goes chunk by chunk. One transaction locks the campaign (``FOR UPDATE SKIP LOCKED``: each
dispatcher replica takes another campaign), takes its next recipients in row order, renders each
from the template version pinned at acceptance, inserts the notifications with their outbox rows
and marks the recipients fanned out. A crash anywhere before the commit redoes the chunk; after
it, nothing of the chunk is done again: no recipient is skipped or gets two notifications. The
chunk's messages are then published at once and their outbox rows deleted; the relay publishes
whatever a crash left in the outbox.

While a chunk is written, the next one is read and rendered ahead, outside any lock, so that the
dispatcher renders while PostgreSQL writes. The chunk read ahead is only a proposal: the next
transaction reads its recipients under the campaign's lock as always, and uses what was rendered
ahead only when it is for exactly those rows (and fresh); otherwise it renders them itself.

A recipient whose content cannot be rendered (the API checked every row at acceptance, so only a
template or schema that changed meanwhile could do that) gets a ``failed`` notification with
reason ``template_error``: it is counted and listed, never silently dropped.

Canceling goes chunk by chunk too, in id order and skipping rows another transaction holds (a
claim being made): it never waits for a lock, so it can never deadlock with channel services.
A message of a canceled notification still in the broker is skipped by the channel service.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from herald_common import outbox
from herald_common.amqp import Publisher
from herald_common.db import is_outage
from herald_common.messages import InvalidDelivery, delivery_message, recipient_value
from herald_common.outbox import OutboxMessage
from herald_common.statuses import CAMPAIGNS_CHANNEL, CANCELABLE, IN_FLIGHT
from herald_common.tallies import MinuteTally
from herald_common.templates import Renderer, TemplateProblem, TemplateVersion, version_of

from .metrics import DispatcherMetrics
from .woken import WokenLoop

log = structlog.get_logger("herald.campaigns")


PUBLISHING = 4
"""Chunks being published at once: the next chunk is built while earlier ones wait for their
confirms."""

HOLD_BACK = 60.0
"""Seconds a campaign whose chunk failed for its data (not an outage) waits before it is tried
again, while the other campaigns go on."""

PUBLISH_GRACE = 10.0
"""Seconds a fanned-out chunk's outbox rows wait before the relay may take them."""

AHEAD_FRESH = 5.0
"""Seconds a chunk rendered ahead stays usable (its notifications' ``created_at`` is when it was
rendered); an older one, say of a campaign paused meanwhile, is rendered again."""


@dataclass(frozen=True)
class _Ahead:
    """A chunk read and rendered ahead of its transaction."""

    campaign_id: UUID
    rows: list[int]
    """The row numbers it was rendered for, in order."""
    created: list[_Notification]
    at: float
    """When (monotonic) it was rendered."""


@dataclass(frozen=True)
class _Notification:
    id: UUID
    recipient: str
    content: Any
    status: str
    error: str | None
    message: OutboxMessage | None
    created_at: datetime


class CampaignRunner(WokenLoop):
    """The dispatcher's campaign loop: woken by NOTIFY, or every ``poll_interval`` seconds."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        publisher: Publisher,
        exchange: str,
        *,
        chunk_size: int,
        poll_interval: float,
        metrics: DispatcherMetrics,
        tally: MinuteTally,
    ) -> None:
        super().__init__(pool, CAMPAIGNS_CHANNEL, poll_interval)
        self._tally = tally
        self._publisher = publisher
        self._exchange = exchange
        self._chunk_size = chunk_size
        self._metrics = metrics
        self._renderer = Renderer()
        self._versions: dict[UUID, TemplateVersion] = {}
        self._checked_at: float | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._held: dict[UUID, float] = {}
        """Campaigns held back after a chunk failed for its data, until (monotonic)."""
        self._ahead: asyncio.Task[_Ahead | None] | None = None
        """The next chunk, being read and rendered while the current one is written."""

    async def stop(self) -> None:
        await super().stop()
        self._drop_ahead()
        await self.settle()

    async def settle(self) -> None:
        """Wait for the chunks being published (what fails stays for the relay)."""
        while self._publishing:
            await asyncio.wait(set(self._publishing))

    async def run_pass(self) -> bool:
        return await self.pass_once() > 0

    async def pass_once(self) -> int:
        """One chunk of cancellation and one of fan-out; finished campaigns marked (at most once
        a poll interval). Returns how many notifications it created or canceled."""
        done = await self.cancel_chunk()
        done += await self.fan_out_chunk()
        now = asyncio.get_running_loop().time()
        if done == 0 or self._checked_at is None or now - self._checked_at >= self._poll_interval:
            self._checked_at = now
            await self.mark_finished()
        return done

    # -- fan-out --------------------------------------------------------------------------------

    async def fan_out_chunk(self) -> int:
        now = time.monotonic()
        self._held = {id: until for id, until in self._held.items() if until > now}
        if self._ahead is not None:
            # Settled before a connection is taken: the chunk ahead reads through a pooled
            # connection of its own, and a transaction waiting for it while holding one could
            # wait for the pool (with the campaign locked) forever.
            await asyncio.wait([self._ahead])
        async with self._pool.acquire() as connection, connection.transaction():
            campaign = await connection.fetchrow(
                """SELECT id, project, channel, template_id, content, data, metadata, priority,
                          correlation_id
                   FROM campaigns
                   WHERE finished_at IS NULL AND status IN ('pending', 'processing')
                     AND fanned_out < recipients AND (send_at IS NULL OR send_at <= now())
                     AND NOT (id = ANY($1::uuid[]))
                   ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""",
                list(self._held),
            )
            if campaign is None:
                self._drop_ahead()
                return 0
            try:
                created, outbox_ids, messages = await self._fan_out(connection, campaign)
            except Exception as exc:
                self._drop_ahead()
                if not is_outage(exc):
                    # Bad data or a bug, which would fail the same way on the next pass: hold
                    # this campaign back a while, so that it does not stop the others.
                    self._held[campaign["id"]] = now + HOLD_BACK
                    log.exception("fanning out a campaign failed; holding it back",
                                  campaign_id=str(campaign["id"]), seconds=HOLD_BACK)  # fmt: skip
                raise
        self._metrics.campaign_notifications.labels(campaign["channel"]).inc(len(created))
        self._tally.count("accepted", campaign["project"], campaign["channel"],
                          campaign["priority"], len(created))  # fmt: skip
        failed = sum(1 for n in created if n.status == "failed")
        self._tally.count("failed", campaign["project"], campaign["channel"],
                          campaign["priority"], failed)  # fmt: skip
        if failed:
            self._metrics.campaign_render_failures.labels(campaign["channel"]).inc(failed)
            log.warning("campaign recipients failed to render", campaign_id=str(campaign["id"]),
                        failed=failed)  # fmt: skip
        while len(self._publishing) >= PUBLISHING:
            await asyncio.wait(set(self._publishing), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._publish(outbox_ids, messages))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        return len(created)

    async def _fan_out(
        self, connection: PoolConnectionProxy[Any], campaign: asyncpg.Record
    ) -> tuple[list[_Notification], list[int], list[OutboxMessage]]:
        """One chunk of ``campaign`` inside the caller's transaction."""
        recipients = await connection.fetch(
            """SELECT row_number, recipient, data FROM campaign_recipients
               WHERE campaign_id = $1 AND notification_id IS NULL
               ORDER BY row_number LIMIT $2""",
            campaign["id"],
            self._chunk_size,
        )
        version = await self._version(connection, campaign["template_id"])
        rows = [r["row_number"] for r in recipients]
        ahead = self._take_ahead(campaign["id"], rows)
        if len(recipients) == self._chunk_size:
            # More may follow: read and render them while this chunk is written.
            self._ahead = asyncio.create_task(self._read_ahead(campaign, version, rows[-1]))
        if ahead is not None:
            created = ahead.created
        else:
            now = datetime.now(UTC)
            created = [self._notification(campaign, version, r, now) for r in recipients]
        messages = [n.message for n in created if n.message is not None]
        # fanned_out counts what this chunk found: a campaign whose rows ran out early
        # (none should) is not picked again and again.
        fanned = len(recipients) if recipients else None
        outbox_ids = await _write(connection, campaign, version, created, rows, messages, fanned)
        return created, outbox_ids, messages

    def _take_ahead(self, campaign_id: UUID, rows: list[int]) -> _Ahead | None:
        """The chunk rendered ahead, if it is for exactly ``rows`` of this campaign and fresh."""
        task, self._ahead = self._ahead, None
        if task is None:
            return None
        if not task.done() or task.cancelled():  # never waited for inside the transaction
            self._ahead = task
            self._drop_ahead()
            return None
        try:
            ahead = task.result()
        except Exception as exc:  # the transaction's own reads will tell if it matters
            log.debug("reading a campaign chunk ahead failed", error=repr(exc))
            return None
        if (
            ahead is None
            or ahead.campaign_id != campaign_id
            or ahead.rows != rows
            or time.monotonic() - ahead.at > AHEAD_FRESH
        ):
            return None
        return ahead

    async def _read_ahead(
        self, campaign: asyncpg.Record, version: TemplateVersion | None, after: int
    ) -> _Ahead | None:
        """Read the recipients after row ``after`` not yet fanned out, and render them: no lock
        is taken, nothing is written (the transaction that uses them checks they are still the
        next ones)."""
        recipients = await self._pool.fetch(
            """SELECT row_number, recipient, data FROM campaign_recipients
               WHERE campaign_id = $1 AND notification_id IS NULL AND row_number > $2
               ORDER BY row_number LIMIT $3""",
            campaign["id"],
            after,
            self._chunk_size,
        )
        if not recipients:
            return None
        now = datetime.now(UTC)
        created = [self._notification(campaign, version, r, now) for r in recipients]
        return _Ahead(
            campaign["id"], [r["row_number"] for r in recipients], created, time.monotonic()
        )

    def _drop_ahead(self) -> None:
        task, self._ahead = self._ahead, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            # Its outcome is of no interest any more; retrieved so that none is reported.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _publish(self, outbox_ids: list[int], messages: list[OutboxMessage]) -> None:
        """Publish the chunk now; what is not confirmed stays for the relay."""
        if not messages:
            return
        try:
            confirmed = await outbox.publish(self._publisher, self._exchange, messages)
        except Exception as exc:  # the relay has them all (after PUBLISH_GRACE)
            log.warning("publishing a campaign chunk failed; the relay will", error=repr(exc))
            return
        done = [i for i, ok in zip(outbox_ids, confirmed, strict=True) if ok]
        published = [m.routing_key for m, ok in zip(messages, confirmed, strict=True) if ok]
        for channel, count in outbox.by_channel(published).items():
            self._metrics.published.labels(channel).inc(count)
        try:
            await outbox.delete(self._pool, done)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            # The relay publishes them once more; the channel services skip the copies.
            log.warning("deleting published outbox rows failed", error=repr(exc))

    async def _version(
        self, connection: PoolConnectionProxy[Any], template_id: UUID | None
    ) -> TemplateVersion | None:
        if template_id is None:
            return None
        version = self._versions.get(template_id)
        if version is None:
            row = await connection.fetchrow(
                "SELECT id, project, channel, name, locale, version, fields FROM templates "
                "WHERE id = $1",
                template_id,
            )
            assert row is not None  # a foreign key: a pinned version is never deleted
            version = self._versions[template_id] = version_of(row)
        return version

    def _notification(
        self,
        campaign: asyncpg.Record,
        version: TemplateVersion | None,
        recipient: asyncpg.Record,
        now: datetime,
    ) -> _Notification:
        id = uuid.uuid4()
        channel = campaign["channel"]
        content: Any = campaign["content"]
        try:
            if version is not None:
                content = self._renderer.render(version, {**campaign["data"], **recipient["data"]})
            message = delivery_message(
                id=id,
                channel=channel,
                to=recipient_value(channel, recipient["recipient"]),
                content=content,
                metadata=campaign["metadata"],
                correlation_id=campaign["correlation_id"],
                created_at=now,
                attempt=1,
                traceparent=None,
                lane=campaign["priority"],
                campaign_id=campaign["id"],
            )
        except (TemplateProblem, InvalidDelivery) as exc:
            reason = f"{exc.field}: {exc.reason}" if isinstance(exc, TemplateProblem) else str(exc)
            return _Notification(
                id, recipient["recipient"], content or {}, "failed", reason, None, now
            )
        return _Notification(id, recipient["recipient"], content, "queued", None, message, now)

    # -- canceling and finishing ----------------------------------------------------------------

    async def cancel_chunk(self) -> int:
        """Cancel a chunk of each canceled campaign's notifications not being sent; a campaign
        is finished once none of its notifications is in flight any more (one being sent may
        still end ``retrying``: it is canceled on a later pass)."""
        done = 0
        async with self._pool.acquire() as connection:
            ids = await connection.fetch(
                """SELECT id FROM campaigns WHERE finished_at IS NULL AND status = 'canceled'
                   ORDER BY created_at, id"""
            )
            for row in ids:
                done += await self._cancel_some(connection, row["id"])
        return done

    async def _cancel_some(self, connection: PoolConnectionProxy[Any], id: UUID) -> int:
        async with connection.transaction():
            campaign = await connection.fetchrow(
                """SELECT id, channel FROM campaigns
                   WHERE id = $1 AND finished_at IS NULL FOR UPDATE SKIP LOCKED""",
                id,
            )
            if campaign is None:
                return 0
            canceled = await connection.fetch(
                """UPDATE notifications SET status = 'canceled', next_attempt_at = NULL,
                       updated_at = now()
                   WHERE id IN (
                       SELECT id FROM notifications
                       WHERE campaign_id = $1 AND status = ANY($2::text[])
                       ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                   RETURNING id""",
                id,
                list(CANCELABLE),
                self._chunk_size,
            )
            ids = [r["id"] for r in canceled]
            if ids:
                await connection.execute(
                    """DELETE FROM outbox WHERE id IN (
                           SELECT id FROM outbox WHERE notification_id = ANY($1::uuid[])
                           FOR UPDATE SKIP LOCKED)""",
                    ids,
                )
            elif not await connection.fetchval(
                """SELECT EXISTS (SELECT 1 FROM notifications
                                  WHERE campaign_id = $1 AND status = ANY($2::text[]))""",
                id,
                list(IN_FLIGHT),
            ):
                await connection.execute(
                    "UPDATE campaigns SET finished_at = now(), updated_at = now() WHERE id = $1",
                    id,
                )
                log.info("campaign canceled", campaign_id=str(id))
        self._metrics.campaign_canceled.labels(campaign["channel"]).inc(len(ids))
        return len(ids)

    async def mark_finished(self) -> None:
        """Campaigns fanned out whose notifications are all sent, failed or canceled end
        ``completed`` or ``completed_with_failures`` (a paused one too: nothing is left for a
        resume to do)."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                """SELECT id FROM campaigns
                   WHERE finished_at IS NULL AND status IN ('processing', 'paused')
                     AND fanned_out >= recipients"""
            )
            for row in rows:
                async with connection.transaction():
                    busy = await connection.fetchval(
                        """SELECT EXISTS (SELECT 1 FROM notifications
                                          WHERE campaign_id = $1 AND status = ANY($2::text[]))""",
                        row["id"],
                        list(IN_FLIGHT),
                    )
                    if busy:
                        continue
                    failed = await connection.fetchval(
                        """SELECT EXISTS (SELECT 1 FROM notifications
                                          WHERE campaign_id = $1 AND status = 'failed')""",
                        row["id"],
                    )
                    status = "completed_with_failures" if failed else "completed"
                    changed = await connection.fetchval(
                        """UPDATE campaigns SET status = $2, finished_at = now(),
                               updated_at = now()
                           WHERE id = $1 AND status IN ('processing', 'paused')
                           RETURNING true""",
                        row["id"],
                        status,
                    )
                if changed:
                    log.info("campaign finished", campaign_id=str(row["id"]), status=status)


async def _write(
    connection: PoolConnectionProxy[Any],
    campaign: asyncpg.Record,
    version: TemplateVersion | None,
    created: list[_Notification],
    rows: list[int],
    messages: list[OutboxMessage],
    fanned: int | None,
) -> list[int]:
    """Write a chunk in one statement (one round trip): its notifications, their outbox rows
    (due after ``PUBLISH_GRACE``: the relay must not publish them beside ``_publish``; it takes
    over only what a crash left), its recipients marked fanned out (``rows``, in the order of
    ``created``) and the campaign's progress. Returns the outbox ids, in the order of
    ``messages``; the statement stores all of it or nothing."""
    template = None if version is None else version.reference()
    queued = await connection.fetch(
        """WITH stored AS (
               INSERT INTO notifications (id, channel, recipient, content, metadata, status,
                   correlation_id, created_at, updated_at, project, template, priority,
                   campaign_id, failure_reason, last_error)
               SELECT i, $1, r, c::jsonb, $2::jsonb, s, $3, t, t, $4, $5::jsonb, $6, $7,
                      CASE WHEN s = 'failed' THEN 'template_error' END, e
               FROM unnest($8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[],
                           $13::timestamptz[])
                   AS x(i, r, c, s, e, t)
               RETURNING id
           ), queued AS (
               INSERT INTO outbox (notification_id, routing_key, body, headers, available_at)
               SELECT o.n, o.rk, o.b, o.hd::jsonb, now() + make_interval(secs => $14)
               FROM unnest($15::uuid[], $16::text[], $17::bytea[], $18::text[])
                   AS o(n, rk, b, hd)
               RETURNING id, notification_id
           ), marked AS (
               UPDATE campaign_recipients SET notification_id = x.n
               FROM unnest($19::int[], $8::uuid[]) AS x(r, n)
               WHERE campaign_id = $7 AND row_number = x.r
           ), progressed AS (
               UPDATE campaigns SET status = 'processing',
                   fanned_out = CASE WHEN $20::int IS NULL THEN recipients
                                     ELSE fanned_out + $20 END,
                   started_at = coalesce(started_at, now()), updated_at = now()
               WHERE id = $7
           )
           SELECT id, notification_id FROM queued""",
        campaign["channel"],
        campaign["metadata"],
        campaign["correlation_id"],
        campaign["project"],
        template,
        campaign["priority"],
        campaign["id"],
        [n.id for n in created],
        [n.recipient for n in created],
        [json.dumps(n.content) for n in created],
        [n.status for n in created],
        [n.error for n in created],
        [n.created_at for n in created],
        PUBLISH_GRACE,
        [m.notification_id for m in messages],
        *outbox.columns(messages),
        rows,
        fanned,
    )
    # RETURNING order is not promised for INSERT ... SELECT: match rows back by notification.
    ids = {r["notification_id"]: r["id"] for r in queued}
    return [ids[m.notification_id] for m in messages]
