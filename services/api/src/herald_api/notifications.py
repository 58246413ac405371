"""Notifications: accepting them (one, or a batch) with their outbox rows, and reading them back."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from herald_common import outbox
from herald_common.batching import Batcher
from herald_common.db import is_bad_data
from herald_common.outbox import OutboxMessage

from .bodies import (
    ACCEPTED_CHANNELS,
    idempotency_key,
    parse_batch,
    parse_single,
    read_json,
    request_hash,
)
from .broker import BrokerLink
from .correlation import stored_id
from .database import Database
from .deliveries import (
    PendingMessage,
    delivery_message,
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
)
from .pagination import KeysetQuery, encode_cursor, parse_limit
from .principal import principal, visible_project
from .responses import json_model
from .settings import API_SETTINGS, ApiSettings

log = structlog.get_logger("herald_api.notifications")

_COLUMNS = """id, project, channel, recipient, content, metadata, status, correlation_id, attempts,
    last_error, failure_reason, provider, provider_message_id, next_attempt_at, created_at,
    updated_at, sent_at"""


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
        to=recipient_value(row["channel"], row["recipient"]),
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
        sent_at=row["sent_at"],
    )


def _accepted(row: asyncpg.Record) -> AcceptedNotification:
    return AcceptedNotification(
        id=row["id"],
        project=row["project"],
        status=row["status"],
        channel=row["channel"],
        to=recipient_value(row["channel"], row["recipient"]),
        metadata=row["metadata"],
        correlation_id=row["correlation_id"],
        created_at=row["created_at"],
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
    message: OutboxMessage


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
) -> _PendingRow:
    """A notification's row values and its delivery message, ready for ``_insert_rows``."""
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
            # Built from the request model that validated it; a push recipient is validated
            # once more by the delivery schema (its request model is a different class).
            validated=plain,
        ),
    )


class NotificationStore:
    """Notifications in PostgreSQL, each committed together with its outbox message."""

    def __init__(self, database: Database, broker: BrokerLink, metrics: ApiMetrics) -> None:
        self._database = database
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
    ) -> list[PendingMessage]:
        """Insert notifications and their outbox rows (due after ``delay`` seconds) inside the
        caller's transaction; returns the outbox messages of the rows inserted, in order (a row
        whose idempotency key is already taken is not)."""
        inserted = await connection.fetch(
            """INSERT INTO notifications (id, channel, recipient, content, metadata, status,
                   correlation_id, idempotency_key, request_hash, created_at, updated_at,
                   project)
               SELECT i, c, r, ct::jsonb, m::jsonb, 'queued', ci, k, h, t, t, p
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::text[])
                   AS x(i, c, r, ct, m, ci, k, h, t, p)
               -- Keys in one order: two group commits holding the same keys in different
               -- orders would otherwise wait on each other's unique index entries (deadlock).
               ORDER BY k NULLS LAST, p
               ON CONFLICT (project, idempotency_key) DO NOTHING
               RETURNING id""",
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
        )
        won = {record["id"] for record in inserted}
        fresh = [r for r in rows if r.id in won]
        outbox_ids = await outbox.insert(connection, [r.message for r in fresh], delay=delay)
        return [PendingMessage(o, r.message) for o, r in zip(outbox_ids, fresh, strict=True)]

    async def _insert_rows(self, rows: list[_PendingRow]) -> list[bool]:
        """Group-commit flush: insert ``rows`` in one transaction and start publishing them; per
        row, True where it was inserted, False where its idempotency key was already taken.

        Publishing is started here, not by the waiting requests, so that a request that went
        away cannot leave reserved room behind.
        """
        handoff = self._broker.handoff(len(rows))
        try:
            async with self._database.transaction() as connection:
                stored = await self._insert(connection, rows, handoff.delay)
        except BaseException:
            handoff.abandon()
            raise
        for pending in handoff.committed(stored):
            self._broker.publish_later(pending)
        won = {p.message.notification_id for p in stored}
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
        id, created_at = uuid.uuid4(), datetime.now(UTC)
        digest = request_hash(request)
        row = _pending_row(
            request,
            id=id,
            project=project,
            created_at=created_at,
            correlation_id=correlation_id,
            traceparent=traceparent,
            idempotency_key=idempotency_key,
            request_hash=digest,
        )
        if not await self._inserts.submit(row):
            async with self._database.connection() as connection:
                return await self._replay(connection, project, idempotency_key, digest), True
        self._metrics.accepted.labels(request.channel).inc()
        log.debug("notification accepted", notification_id=str(id), channel=request.channel)
        return (
            AcceptedNotification(
                id=id,
                project=project,
                status="queued",
                channel=request.channel,
                to=to_shown(request.to),
                metadata=request.metadata,
                correlation_id=correlation_id,
                created_at=created_at,
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
            )
            for id, r in zip(ids, requests, strict=True)
        ]
        digest = request_hash(requests)
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
                stored = await self._insert(connection, rows, handoff.delay) if won else []
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
        log.debug("notification batch accepted", notifications=len(requests))
        await self._broker.publish(publish)
        accepted = [
            AcceptedNotification(
                id=id,
                project=project,
                status="queued",
                channel=r.channel,
                to=to_shown(r.to),
                metadata=r.metadata,
                correlation_id=correlation_id,
                created_at=created_at,
            )
            for id, r in zip(ids, requests, strict=True)
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

    async def page(
        self,
        *,
        project: str | None,
        status: str | None,
        channel: str | None,
        limit: int,
        cursor: str | None,
    ) -> NotificationPage:
        query = KeysetQuery()
        if project is not None:
            query.add("project = {0}", project)
        if status is not None:
            query.add("status = {0}", status)
        if channel is not None:
            query.add("channel = {0}", channel)
        query.after("created_at", cursor)
        limit_arg = query.limit_placeholder(limit)
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM notifications {query.where()}
                    ORDER BY created_at DESC, id DESC LIMIT {limit_arg}""",
                *query.args,
            )
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
    if problems:
        raise InvalidInput(problems)
    page = await request.app[NOTIFICATIONS].page(
        project=project,
        status=status,
        channel=channel,
        limit=parse_limit(params.get("limit")),
        cursor=params.get("cursor") or None,
    )
    return json_model(page)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/notifications", create_notification)
    app.router.add_post("/v1/notifications/batch", create_batch)
    app.router.add_get("/v1/notifications", list_notifications)
    app.router.add_get("/v1/notifications/{id}", get_notification)
