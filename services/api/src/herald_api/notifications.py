"""Notifications: accepting them (one, or a batch) with their outbox rows, and reading them back."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy
from pydantic import EmailStr, TypeAdapter

from herald_common import outbox
from herald_common.batching import Batcher
from herald_common.db import is_bad_data
from herald_common.messages import delivery_message
from herald_common.outbox import OutboxMessage
from herald_common.statuses import CANCELABLE
from herald_common.tallies import MinuteTally
from herald_common.topology import NORMAL

from .bodies import (
    ACCEPTED_CHANNELS,
    idempotency_key,
    parse_batch,
    parse_single,
    query_instant,
    query_line,
    read_json,
    request_hash,
)
from .broker import BrokerLink
from .correlation import stored_id
from .database import Database
from .deliveries import (
    PendingMessage,
    recipient_text,
    recipient_value,
    traceparent_of,
)
from .errors import Conflict, FieldProblem, IdempotencyConflict, InvalidInput, NotFound
from .metrics import ApiMetrics
from .models import (
    NOTIFICATION_STATUSES,
    PROJECT_PATTERN,
    AcceptedNotification,
    Attempt,
    BatchAccepted,
    Notification,
    NotificationDeadLetter,
    NotificationDetail,
    NotificationPage,
    NotificationRequest,
    e164,
)
from .pagination import KeysetQuery, encode_cursor, parse_limit
from .principal import principal, visible_project
from .responses import json_model
from .settings import API_SETTINGS, ApiSettings
from .templates import TemplateStore

log = structlog.get_logger("herald_api.notifications")

_COLUMNS = """id, project, channel, recipient, content, metadata, status, correlation_id, attempts,
    last_error, failure_reason, provider, provider_message_id, next_attempt_at, created_at,
    updated_at, send_at, sent_at, template, priority, campaign_id, redacted_at"""


_EMAIL = TypeAdapter(EmailStr)


def recipients_matching(to: str) -> list[str]:
    """The stored recipients a search for ``to`` means: ``to`` as given, and as acceptance would
    have stored it (an email address with its domain in lower case, a phone number in E.164, an
    FCM token inside its push recipient, a push recipient's JSON in its canonical form)."""
    found = [to]
    normalisers: list[Callable[[str], str]] = [
        _EMAIL.validate_python,
        e164,
        lambda token: recipient_text({"provider": "fcm", "token": token}),
        lambda text: recipient_text(json.loads(text)) if text.startswith("{") else text,
    ]
    for normalise in normalisers:
        try:
            candidate = normalise(to)
        except ValueError:  # pydantic's ValidationError and json's JSONDecodeError among them
            continue
        if candidate not in found:
            found.append(candidate)
    return found


def parse_id(text: str) -> UUID:
    """A resource id from the path; anything that is not a UUID names no resource (404)."""
    try:
        return UUID(text)
    except ValueError:
        raise NotFound(f"no resource with id {text!r}") from None


def _notification(row: asyncpg.Record) -> Notification:
    return Notification(
        id=row["id"],
        project=row["project"],
        channel=row["channel"],
        to=None if row["redacted_at"] else recipient_value(row["channel"], row["recipient"]),
        content=row["content"],
        metadata=row["metadata"],
        status=row["status"],
        correlation_id=row["correlation_id"],
        attempt_count=row["attempts"],
        last_error=row["last_error"],
        failure_reason=row["failure_reason"],
        provider=row["provider"],
        provider_message_id=row["provider_message_id"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        send_at=row["send_at"],
        sent_at=row["sent_at"],
        template=row["template"],
        priority=row["priority"],
        campaign_id=row["campaign_id"],
        redacted_at=row["redacted_at"],
    )


def _accepted(row: asyncpg.Record) -> AcceptedNotification:
    return AcceptedNotification(
        id=row["id"],
        project=row["project"],
        status=row["status"],
        channel=row["channel"],
        to=None if row["redacted_at"] else recipient_value(row["channel"], row["recipient"]),
        metadata=row["metadata"],
        correlation_id=row["correlation_id"],
        created_at=row["created_at"],
        send_at=row["send_at"],
        template=row["template"],
        priority=row["priority"],
    )


@dataclass(frozen=True)
class _PendingRow:
    id: uuid.UUID
    project: str
    channel: str
    recipient: str
    content: str
    metadata: str
    correlation_id: str
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime
    send_at: datetime | None
    """When the client asked for it to be sent; None: at once."""
    template: str | None
    """The template it was rendered from, as JSON; None: the request gave its content."""
    priority: str
    message: OutboxMessage

    scheduled: bool
    """True: stored ``scheduled``, its outbox row due at ``send_at``, left to the relay."""

    @property
    def status(self) -> str:
        return "scheduled" if self.scheduled else "queued"

    @property
    def due(self) -> datetime | None:
        return self.send_at if self.scheduled else None


CLOCK_ALLOWANCE = timedelta(minutes=1)
"""A ``send_at`` up to this far in the past (by this host's clock) is still left to the relay,
which compares it with PostgreSQL's clock: a host whose clock runs ahead never sends early."""


def _scheduled(send_at: datetime | None, now: datetime) -> bool:
    return send_at is not None and send_at > now - CLOCK_ALLOWANCE


def to_shown(to: Any) -> Any:
    """A request's recipient as responses show it (push recipients as their JSON object)."""
    return to if isinstance(to, str) else to.model_dump(mode="json")


def _pending_row(
    request: NotificationRequest,
    *,
    id: UUID,
    project: str,
    created_at: datetime,
    correlation_id: str,
    traceparent: str | None,
    idempotency_key: str | None,
    request_hash: str | None,
    template: dict[str, Any] | None,
) -> _PendingRow:
    """A notification's row values and its delivery message, ready for ``_insert_rows``;
    ``request`` has its content (rendered already if it named a template)."""
    assert request.content is not None, "render the request's template first"
    plain = isinstance(request.to, str)  # email, sms; push recipients are objects
    to: Any = request.to if isinstance(request.to, str) else request.to.model_dump(mode="json")
    return _PendingRow(
        id=id,
        project=project,
        channel=request.channel,
        recipient=recipient_text(to),
        content=json.dumps(request.content.model_dump(mode="json")),
        metadata=json.dumps(request.metadata),
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=created_at,
        send_at=request.send_at,
        template=None if template is None else json.dumps(template),
        priority=request.priority or NORMAL,
        scheduled=_scheduled(request.send_at, created_at),
        message=delivery_message(
            id=id,
            channel=request.channel,
            to=to,
            content=request.content if plain else request.content.model_dump(mode="json"),
            metadata=request.metadata,
            correlation_id=correlation_id,
            created_at=created_at,
            attempt=1,
            traceparent=traceparent,
            lane=request.priority or NORMAL,
            # Built from the request model that validated it; a push recipient is validated
            # once more by the delivery schema (its request model is a different class).
            validated=plain,
        ),
    )


class NotificationStore:
    """Notifications in PostgreSQL, each committed together with its outbox message."""

    def __init__(
        self,
        database: Database,
        broker: BrokerLink,
        metrics: ApiMetrics,
        templates: TemplateStore,
        tally: MinuteTally,
    ) -> None:
        self._database = database
        self._templates = templates
        self._tally = tally
        self._broker = broker
        self._metrics = metrics
        # Group commit: concurrent single POSTs share one transaction (one WAL flush). A row
        # PostgreSQL refuses fails only its own request: the batch is split until it is found.
        # Validation should leave no such row; if one slips through, its request alone gets a 500.
        self._inserts: Batcher[_PendingRow, bool] = Batcher(
            self._insert_rows, max_size=500, isolate=is_bad_data
        )

    async def close(self) -> None:
        await self._inserts.close()

    @staticmethod
    async def _insert(
        connection: PoolConnectionProxy[Any], rows: list[_PendingRow], delay: float
    ) -> tuple[set[UUID], list[PendingMessage]]:
        """Insert notifications and their outbox rows (due after ``delay`` seconds, or at their
        ``send_at``) in one statement, atomic on its own or part of the caller's transaction;
        returns the ids of the rows inserted, with the outbox messages to publish now of them,
        in order (neither a scheduled row nor one whose idempotency key is already taken).

        One statement rather than BEGIN, two INSERTs and COMMIT: a single POST waits for one
        round trip to PostgreSQL instead of four. The outbox rows are made from what the
        statement's first part returns: only for notifications it inserted, and all or none."""
        inserted = await connection.fetch(
            """WITH stored AS (
                   INSERT INTO notifications (id, channel, recipient, content, metadata, status,
                       correlation_id, idempotency_key, request_hash, created_at, updated_at,
                       project, send_at, template, priority)
                   SELECT i, c, r, ct::jsonb, m::jsonb, s, ci, k, h, t, t, p, sa, tp::jsonb, pr
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                               $10::text[], $11::text[], $12::timestamptz[], $13::text[],
                               $14::text[])
                       AS x(i, c, r, ct, m, ci, k, h, t, p, s, sa, tp, pr)
                   -- Keys in one order: two group commits holding the same keys in different
                   -- orders would otherwise wait on each other's unique index entries
                   -- (deadlock).
                   ORDER BY k NULLS LAST, p
                   ON CONFLICT (project, idempotency_key) DO NOTHING
                   RETURNING id
               ), queued AS (
                   INSERT INTO outbox (notification_id, routing_key, body, headers, available_at)
                   SELECT o.n, o.rk, o.b, o.hd::jsonb,
                          COALESCE(o.d, now() + make_interval(secs => $19))
                   FROM unnest($1::uuid[], $15::text[], $16::bytea[], $17::text[],
                               $18::timestamptz[]) AS o(n, rk, b, hd, d)
                   WHERE o.n IN (SELECT id FROM stored)
                   RETURNING id, notification_id
               )
               SELECT q.notification_id, q.id FROM queued q""",
            [r.id for r in rows],
            [r.channel for r in rows],
            [r.recipient for r in rows],
            [r.content for r in rows],
            [r.metadata for r in rows],
            [r.correlation_id for r in rows],
            [r.idempotency_key for r in rows],
            [r.request_hash for r in rows],
            [r.created_at for r in rows],
            [r.project for r in rows],
            [r.status for r in rows],
            [r.send_at for r in rows],
            [r.template for r in rows],
            [r.priority for r in rows],
            *outbox.columns([r.message for r in rows]),
            [r.due for r in rows],
            delay,
        )
        # Every stored notification has its outbox row (both parts or neither are committed).
        outbox_ids = {record["notification_id"]: record["id"] for record in inserted}
        # A scheduled row's message is the relay's to publish when it falls due, never ours now.
        return set(outbox_ids), [
            PendingMessage(outbox_ids[r.id], r.message)
            for r in rows
            if r.id in outbox_ids and not r.scheduled
        ]

    async def _insert_rows(self, rows: list[_PendingRow]) -> list[bool]:
        """Group-commit flush: insert ``rows`` in one transaction and start publishing them; per
        row, True where it was inserted, False where its idempotency key was already taken.

        Publishing is started here, not by the waiting requests, so that a request that went
        away cannot leave reserved room behind.
        """
        handoff = self._broker.handoff(len(rows))
        try:
            async with self._database.connection() as connection:  # one statement: atomic
                won, stored = await self._insert(connection, rows, handoff.delay)
        except BaseException:
            handoff.abandon()
            raise
        for pending in handoff.committed(stored):
            self._broker.publish_later(pending)
        return [r.id in won for r in rows]

    async def create(
        self,
        request: NotificationRequest,
        *,
        project: str,
        idempotency_key: str | None,
        correlation_id: str,
        traceparent: str | None,
    ) -> tuple[AcceptedNotification, bool]:
        """Store and publish one notification; (it, True) when the idempotency key replayed one.

        A reused key with the same request returns the notification it made and stores and
        publishes nothing; with a different request it raises ``IdempotencyConflict``. Two racing
        requests with one key are settled by the unique index: one inserts, the other finds it.
        """
        digest = request_hash(request)  # of the request as sent, before rendering
        ((request, template),) = await self._templates.render(
            [request], project=project, batch=False
        )
        id, created_at = uuid.uuid4(), datetime.now(UTC)
        row = _pending_row(
            request,
            id=id,
            project=project,
            created_at=created_at,
            correlation_id=correlation_id,
            traceparent=traceparent,
            idempotency_key=idempotency_key,
            request_hash=digest,
            template=template,
        )
        if not await self._inserts.submit(row):
            async with self._database.connection() as connection:
                return await self._replay(connection, project, idempotency_key, digest), True
        self._metrics.accepted.labels(request.channel).inc()
        self._tally.count("accepted", project, request.channel, row.priority)
        log.debug("notification accepted", notification_id=str(id), channel=request.channel)
        return (
            AcceptedNotification(
                id=id,
                project=project,
                status=row.status,
                channel=request.channel,
                to=to_shown(request.to),
                metadata=request.metadata,
                correlation_id=correlation_id,
                created_at=created_at,
                send_at=row.send_at,
                priority=row.priority,
                template=template,
            ),
            False,
        )

    @staticmethod
    async def _replay(
        connection: PoolConnectionProxy[Any], project: str, key: str | None, digest: str
    ) -> AcceptedNotification:
        row = await connection.fetchrow(
            f"""SELECT {_COLUMNS}, request_hash FROM notifications
                WHERE project = $1 AND idempotency_key = $2""",
            project,
            key,
        )
        if row is None:  # the conflicting row went away between the two statements
            raise Conflict("a concurrent request with this Idempotency-Key changed; retry")
        if row["request_hash"] != digest:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request body")
        return _accepted(row)

    async def create_many(
        self,
        requests: list[NotificationRequest],
        *,
        project: str,
        idempotency_key: str | None,
        correlation_id: str,
        traceparent: str | None,
    ) -> tuple[list[AcceptedNotification], bool]:
        """Store a batch in one transaction (multi-row inserts), then publish it in one go;
        (them, True) when the idempotency key replayed an earlier batch.

        A keyed batch first inserts its key's row (``notification_batches``): a concurrent batch
        with the same key waits for that transaction and then replays what it committed. The same
        key with a different batch raises ``IdempotencyConflict``. Keys of batches and of single
        notifications are separate.
        """
        digest = request_hash(requests)  # of the requests as sent, before rendering
        rendered = await self._templates.render(requests, project=project, batch=True)
        created_at = datetime.now(UTC)
        ids = [uuid.uuid4() for _ in requests]
        rows = [
            _pending_row(
                r,
                id=id,
                project=project,
                created_at=created_at,
                correlation_id=correlation_id,
                traceparent=traceparent,
                idempotency_key=None,
                request_hash=None,
                template=template,
            )
            for id, (r, template) in zip(ids, rendered, strict=True)
        ]
        handoff = self._broker.handoff(len(rows))
        try:
            async with self._database.transaction() as connection:
                won = idempotency_key is None or bool(
                    await connection.fetchval(
                        """INSERT INTO notification_batches (project, idempotency_key,
                               request_hash, notification_ids)
                           VALUES ($1, $2, $3, $4) ON CONFLICT (project, idempotency_key)
                           DO NOTHING RETURNING true""",
                        project,
                        idempotency_key,
                        digest,
                        ids,
                    )
                )
                stored = (await self._insert(connection, rows, handoff.delay))[1] if won else []
        except BaseException:
            handoff.abandon()
            raise
        publish = handoff.committed(stored)
        if not won:
            async with self._database.connection() as connection:
                return (
                    await self._replay_batch(connection, project, idempotency_key, digest),
                    True,
                )
        for request in requests:
            self._metrics.accepted.labels(request.channel).inc()
            self._tally.count("accepted", project, request.channel, request.priority or NORMAL)
        log.debug("notification batch accepted", notifications=len(requests))
        await self._broker.publish(publish)
        accepted = [
            AcceptedNotification(
                id=id,
                project=project,
                status=row.status,
                channel=r.channel,
                to=to_shown(r.to),
                metadata=r.metadata,
                correlation_id=correlation_id,
                created_at=created_at,
                send_at=row.send_at,
                priority=row.priority,
                template=template,
            )
            for id, (r, template), row in zip(ids, rendered, rows, strict=True)
        ]
        return accepted, False

    @staticmethod
    async def _replay_batch(
        connection: PoolConnectionProxy[Any], project: str, key: str | None, digest: str
    ) -> list[AcceptedNotification]:
        batch = await connection.fetchrow(
            """SELECT request_hash, notification_ids FROM notification_batches
               WHERE project = $1 AND idempotency_key = $2""",
            project,
            key,
        )
        if batch is None:  # the batch that took the key went away between the two statements
            raise Conflict("a concurrent request with this Idempotency-Key changed; retry")
        if batch["request_hash"] != digest:
            raise IdempotencyConflict("this Idempotency-Key was used with a different batch")
        rows = await connection.fetch(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = ANY($1::uuid[])",
            batch["notification_ids"],
        )
        by_id = {row["id"]: row for row in rows}
        if len(by_id) != len(batch["notification_ids"]):
            raise Conflict("the notifications this Idempotency-Key made are no longer stored")
        return [_accepted(by_id[id]) for id in batch["notification_ids"]]

    async def get(self, id: UUID, *, project: str | None) -> NotificationDetail:
        """The notification, if it belongs to ``project`` (None: any project); else 404, as for
        one that does not exist, so that ids of other projects' notifications are not told."""
        async with self._database.connection() as connection:
            row = await connection.fetchrow(
                f"""SELECT {_COLUMNS} FROM notifications
                    WHERE id = $1 AND ($2::text IS NULL OR project = $2)""",
                id,
                project,
            )
            if row is None:
                raise NotFound(f"no notification with id {id}")
            attempts = await connection.fetch(
                """SELECT attempt, provider, started_at, finished_at, result, error,
                          provider_message_id, possible_duplicate, segments, provider_hops
                   FROM attempts WHERE notification_id = $1 ORDER BY attempt""",
                id,
            )
            dead_letters = await connection.fetch(
                """SELECT id, reason, last_error, dead_lettered_at, resolved_at, resolution
                   FROM dead_letters WHERE notification_id = $1
                   ORDER BY dead_lettered_at, id""",
                id,
            )
        return NotificationDetail(
            **_notification(row).model_dump(),
            attempts=[Attempt.model_validate(dict(a)) for a in attempts],
            dead_letters=[NotificationDeadLetter.model_validate(dict(d)) for d in dead_letters],
        )

    async def cancel(self, id: UUID, *, project: str | None) -> Notification:
        """Cancel a notification nothing is being sent for (``CANCELABLE``); 409 otherwise, 404
        when it is not ``project``'s (None: any project).

        Its unpublished outbox row goes with it. A row the relay is publishing right now is
        skipped, not waited for: that message, like one already queued or waiting in a retry
        tier, finds the notification canceled when it is delivered, and is skipped.
        """
        async with self._database.transaction() as connection:
            # A row the relay holds (publishing it) is left to it: that message then finds the
            # notification canceled and is skipped, and no cancel waits for a publish.
            await connection.execute(
                """DELETE FROM outbox WHERE id IN (
                       SELECT o.id FROM outbox o JOIN notifications n ON n.id = o.notification_id
                       WHERE o.notification_id = $1 AND ($2::text IS NULL OR n.project = $2)
                       FOR UPDATE OF o SKIP LOCKED)""",
                id,
                project,
            )
            row = await connection.fetchrow(
                """SELECT status FROM notifications
                   WHERE id = $1 AND ($2::text IS NULL OR project = $2) FOR UPDATE""",
                id,
                project,
            )
            if row is None:
                raise NotFound(f"no notification with id {id}")
            if row["status"] not in CANCELABLE:
                raise Conflict(
                    f"a {row['status']} notification cannot be canceled; only "
                    + ", ".join(CANCELABLE)
                    + " ones can"
                )
            canceled = await connection.fetchrow(
                f"""UPDATE notifications SET status = 'canceled', next_attempt_at = NULL,
                        updated_at = now()
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                id,
            )
        assert canceled is not None
        self._metrics.canceled.labels(canceled["channel"]).inc()
        log.info("notification canceled", notification_id=str(id), was=row["status"])
        return _notification(canceled)

    async def page(
        self,
        *,
        project: str | None,
        status: str | None,
        channel: str | None,
        limit: int,
        cursor: str | None,
        campaign: UUID | None = None,
        recipient: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> NotificationPage:
        # Each filter has an index that leads with it and ends in (created_at, id), so the
        # planner walks one of them newest first and checks the rest on the rows it meets.
        query = KeysetQuery()
        if campaign is not None:
            query.add("campaign_id = {0}", campaign)
        if recipient is not None:
            # On the index of md5(recipient) (a push recipient is too long for a B-tree entry).
            candidates = recipients_matching(recipient)
            digests = [hashlib.md5(c.encode(), usedforsecurity=False).hexdigest()
                       for c in candidates]  # fmt: skip
            query.add("md5(recipient) = ANY({0}::text[]) AND recipient = ANY({1}::text[])",
                      digests, candidates)  # fmt: skip
        if created_after is not None:
            query.add("created_at >= {0}", created_after)
        if created_before is not None:
            query.add("created_at < {0}", created_before)
        if project is not None:
            query.add("project = {0}", project)
        if status is not None:
            query.add("status = {0}", status)
        if channel is not None:
            query.add("channel = {0}", channel)
        query.after("created_at", cursor)
        limit_arg = query.limit_placeholder(limit)
        select = f"""SELECT {_COLUMNS} FROM notifications {query.where()}"""
        order = f"ORDER BY created_at DESC, id DESC LIMIT {limit_arg}"
        if campaign is not None and status is None:
            # A campaign's notifications whatever their status: the newest page of each status
            # on notifications_by_campaign (campaign_id, status, created_at, id), merged. One
            # more index on the campaign alone would cost every fan-out's insert.
            select = " UNION ALL ".join(
                f"({select} AND status = '{each}' {order})" for each in NOTIFICATION_STATUSES
            )
            select = f"SELECT * FROM ({select}) page"
        async with self._database.connection() as connection:
            rows = await connection.fetch(f"{select} {order}", *query.args)
        items = [_notification(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return NotificationPage(items=items, next_cursor=next_cursor)


NOTIFICATIONS = web.AppKey("notifications", NotificationStore)


# --- routes -----------------------------------------------------------------------------------


def _location(id: UUID) -> dict[str, str]:
    return {"Location": f"/v1/notifications/{id}"}


async def create_notification(request: web.Request) -> web.Response:
    settings: ApiSettings = request.app[API_SETTINGS]
    data = await read_json(request, settings.api_max_body_bytes)
    key = idempotency_key(request)
    correlation_id = stored_id(request)
    notification = parse_single(data, settings.api_max_metadata_bytes)
    accepted, replayed = await request.app[NOTIFICATIONS].create(
        notification,
        project=principal(request).project,
        idempotency_key=key,
        correlation_id=correlation_id,
        traceparent=traceparent_of(request),
    )
    headers = _location(accepted.id)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_model(accepted, status=200 if replayed else 202, headers=headers)


async def create_batch(request: web.Request) -> web.Response:
    settings: ApiSettings = request.app[API_SETTINGS]
    data = await read_json(request, settings.api_max_body_bytes)
    key = idempotency_key(request)
    correlation_id = stored_id(request)
    notifications = parse_batch(data, settings.api_max_batch, settings.api_max_metadata_bytes)
    accepted, replayed = await request.app[NOTIFICATIONS].create_many(
        notifications,
        project=principal(request).project,
        idempotency_key=key,
        correlation_id=correlation_id,
        traceparent=traceparent_of(request),
    )
    body = BatchAccepted(notifications=accepted)
    if replayed:
        return json_model(body, headers={"Idempotent-Replayed": "true"})
    return json_model(body, status=202)


async def get_notification(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    store = request.app[NOTIFICATIONS]
    return json_model(await store.get(id, project=visible_project(request)))


async def cancel_notification(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    store = request.app[NOTIFICATIONS]
    return json_model(await store.cancel(id, project=visible_project(request)))


async def list_notifications(request: web.Request) -> web.Response:
    params = request.query
    problems = []
    status = params.get("status") or None
    if status is not None and status not in NOTIFICATION_STATUSES:
        problems.append(
            FieldProblem("status", f"must be one of {', '.join(NOTIFICATION_STATUSES)}")
        )
    channel = params.get("channel") or None
    if channel is not None and channel not in ACCEPTED_CHANNELS:
        problems.append(FieldProblem("channel", f"must be one of {', '.join(ACCEPTED_CHANNELS)}"))
    project = visible_project(request)
    if project is not None and not re.fullmatch(PROJECT_PATTERN, project):
        problems.append(FieldProblem("project", "not a project name"))
    campaign = None
    if text := params.get("campaign"):
        try:
            campaign = UUID(text)
        except ValueError:
            problems.append(FieldProblem("campaign", "must be a campaign id (a UUID)"))
    if problems:
        raise InvalidInput(problems)
    page = await request.app[NOTIFICATIONS].page(
        project=project,
        status=status,
        channel=channel,
        limit=parse_limit(params.get("limit")),
        cursor=params.get("cursor") or None,
        campaign=campaign,
        recipient=query_line(request, "to"),
        created_after=query_instant(request, "created_after"),
        created_before=query_instant(request, "created_before"),
    )
    return json_model(page)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/notifications", create_notification)
    app.router.add_post("/v1/notifications/batch", create_batch)
    app.router.add_get("/v1/notifications", list_notifications)
    app.router.add_get("/v1/notifications/{id}", get_notification)
    app.router.add_delete("/v1/notifications/{id}", cancel_notification)
