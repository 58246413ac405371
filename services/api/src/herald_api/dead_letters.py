"""Dead letters: listing them, and redriving or discarding them.

The dispatcher records dead letters; an operator resolves each one way or the other. A redrive
queues the notification again with a fresh attempt budget: its message goes through the outbox
like a new notification's, numbered after the attempts already made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web

from herald_common import outbox

from .bodies import parse_model, read_json
from .broker import BrokerLink
from .deliveries import PendingMessage, delivery_message, traceparent_of
from .errors import Conflict, FieldProblem, InvalidInput, NotFound
from .models import DeadLetter, DeadLetterPage, RedriveFilter, RedriveResult
from .notifications import parse_id
from .pagination import KeysetQuery, encode_cursor, parse_limit
from .responses import json_model
from .settings import API_SETTINGS

log = structlog.get_logger("herald_api.dead_letters")

_COLUMNS = """id, notification_id, channel, reason, last_error, attempts, dead_lettered_at,
    resolved_at, resolution"""

_REQUEUE = """
    WITH resolved AS (
        UPDATE dead_letters SET resolved_at = now(), resolution = 'redriven'
        WHERE id = ANY($1::uuid[]) AND resolved_at IS NULL AND notification_id IS NOT NULL
        RETURNING id, notification_id, dead_lettered_at
    ), requeued AS (
        UPDATE notifications n
        SET status = 'queued', failure_reason = NULL, next_attempt_at = NULL, updated_at = now()
        FROM resolved r
        WHERE n.id = r.notification_id
        RETURNING r.id AS dead_letter_id, r.dead_lettered_at, n.id, n.channel, n.recipient,
                  n.content, n.metadata, n.correlation_id, n.created_at, n.attempts
    )
    SELECT * FROM requeued ORDER BY dead_lettered_at, dead_letter_id"""


@dataclass(frozen=True)
class _Requeued:
    dead_letter_id: UUID
    pending: PendingMessage


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter.model_validate(dict(row))


class DeadLetterStore:
    def __init__(self, pool: asyncpg.Pool[Any], broker: BrokerLink, outbox_grace: float) -> None:
        self._pool = pool
        self._broker = broker
        self._grace = outbox_grace

    async def page(
        self,
        *,
        channel: str | None,
        reason: str | None,
        include_resolved: bool,
        limit: int,
        cursor: str | None,
    ) -> DeadLetterPage:
        query = KeysetQuery()
        if not include_resolved:
            query.add("resolved_at IS NULL")
        if channel is not None:
            query.add("channel = {0}", channel)
        if reason is not None:
            query.add("reason = {0}", reason)
        query.after("dead_lettered_at", cursor)
        limit_arg = query.limit_placeholder(limit)
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM dead_letters {query.where()}
                ORDER BY dead_lettered_at DESC, id DESC LIMIT {limit_arg}""",
            *query.args,
        )
        items = [_dead_letter(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].dead_lettered_at, items[-1].id)
        return DeadLetterPage(items=items, next_cursor=next_cursor)

    async def get(self, id: UUID) -> DeadLetter:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1", id)
        if row is None:
            raise NotFound(f"no dead letter with id {id}")
        return _dead_letter(row)

    async def redrive(self, id: UUID, *, traceparent: str | None) -> DeadLetter:
        """Queue the dead letter's notification again; 409 when resolved or malformed."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                """SELECT notification_id, resolved_at, resolution FROM dead_letters
                   WHERE id = $1 FOR UPDATE""",
                id,
            )
            if row is None:
                raise NotFound(f"no dead letter with id {id}")
            if row["resolved_at"] is not None:
                raise Conflict(f"dead letter {id} is already resolved ({row['resolution']})")
            if row["notification_id"] is None:
                raise Conflict("cannot redrive a malformed message")
            requeued = await self._requeue(connection, [id], traceparent)
            resolved = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1", id
            )
        assert resolved is not None
        await self._broker.publish([r.pending for r in requeued])
        log.info("dead letter redriven", dead_letter_id=str(id))
        return _dead_letter(resolved)

    async def redrive_matching(
        self, where: RedriveFilter, *, traceparent: str | None
    ) -> RedriveResult:
        """Redrive every unresolved, well-formed dead letter the filter matches, in one go.

        Dead letters another request is resolving at this moment are skipped, not waited for.
        """
        query = KeysetQuery()
        query.add("resolved_at IS NULL")
        query.add("notification_id IS NOT NULL")
        if where.channel is not None:
            query.add("channel = {0}", where.channel)
        if where.reason is not None:
            query.add("reason = {0}", where.reason)
        if where.since is not None:
            query.add("dead_lettered_at >= {0}", where.since)
        if where.until is not None:
            query.add("dead_lettered_at < {0}", where.until)
        async with self._pool.acquire() as connection, connection.transaction():
            ids = [
                row["id"]
                for row in await connection.fetch(
                    f"""SELECT id FROM dead_letters {query.where()}
                        ORDER BY dead_lettered_at, id FOR UPDATE SKIP LOCKED""",
                    *query.args,
                )
            ]
            requeued = await self._requeue(connection, ids, traceparent)
        await self._broker.publish([r.pending for r in requeued])
        log.info("dead letters redriven", count=len(requeued))
        return RedriveResult(
            redriven=len(requeued),
            ids=[r.dead_letter_id for r in requeued],
            notification_ids=[r.pending.message.notification_id for r in requeued],
        )

    async def _requeue(
        self,
        connection: asyncpg.pool.PoolConnectionProxy[Any],
        ids: list[UUID],
        traceparent: str | None,
    ) -> list[_Requeued]:
        if not ids:
            return []
        rows = await connection.fetch(_REQUEUE, ids)
        messages = [
            delivery_message(
                id=row["id"],
                channel=row["channel"],
                to=row["recipient"],
                content=row["content"],
                metadata=row["metadata"],
                correlation_id=row["correlation_id"],
                created_at=row["created_at"],
                attempt=row["attempts"] + 1,
                traceparent=traceparent,
            )
            for row in rows
        ]
        outbox_ids = await outbox.insert(connection, messages, delay=self._grace)
        return [
            _Requeued(row["dead_letter_id"], PendingMessage(o, m))
            for o, m, row in zip(outbox_ids, messages, rows, strict=True)
        ]

    async def discard(self, id: UUID) -> DeadLetter:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"""UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded'
                    WHERE id = $1 AND resolved_at IS NULL RETURNING {_COLUMNS}""",
                id,
            )
            if row is None:
                existing = await connection.fetchrow(
                    "SELECT resolution FROM dead_letters WHERE id = $1", id
                )
                if existing is None:
                    raise NotFound(f"no dead letter with id {id}")
                raise Conflict(f"dead letter {id} is already resolved ({existing['resolution']})")
        log.info("dead letter discarded", dead_letter_id=str(id))
        return _dead_letter(row)


DEAD_LETTERS = web.AppKey("dead_letters", DeadLetterStore)


# --- routes -----------------------------------------------------------------------------------


def _flag(name: str, value: str | None) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidInput([FieldProblem(name, "must be true or false")])


async def list_dead_letters(request: web.Request) -> web.Response:
    params = request.query
    page = await request.app[DEAD_LETTERS].page(
        channel=params.get("channel") or None,
        reason=params.get("reason") or None,
        include_resolved=_flag("include_resolved", params.get("include_resolved")),
        limit=parse_limit(params.get("limit")),
        cursor=params.get("cursor") or None,
    )
    return json_model(page)


async def get_dead_letter(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    return json_model(await request.app[DEAD_LETTERS].get(id))


async def redrive_dead_letter(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    log.info("redrive requested", dead_letter_id=str(id))
    resolved = await request.app[DEAD_LETTERS].redrive(id, traceparent=traceparent_of(request))
    return json_model(resolved)


async def redrive_dead_letters(request: web.Request) -> web.Response:
    settings = request.app[API_SETTINGS]
    where = parse_model(RedriveFilter, await read_json(request, settings.api_max_body_bytes))
    log.info("bulk redrive requested", **where.model_dump(mode="json", exclude_none=True))
    result = await request.app[DEAD_LETTERS].redrive_matching(
        where, traceparent=traceparent_of(request)
    )
    return json_model(result)


async def discard_dead_letter(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    return json_model(await request.app[DEAD_LETTERS].discard(id))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/dead-letters", list_dead_letters)
    app.router.add_post("/v1/dead-letters/redrive", redrive_dead_letters)
    app.router.add_get("/v1/dead-letters/{id}", get_dead_letter)
    app.router.add_delete("/v1/dead-letters/{id}", discard_dead_letter)
    app.router.add_post("/v1/dead-letters/{id}/redrive", redrive_dead_letter)
