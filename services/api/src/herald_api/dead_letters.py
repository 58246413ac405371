"""Dead letters: listing them, and redriving or discarding them.

The dispatcher records dead letters; an operator resolves each one way or the other. A redrive
starts a new attempt generation: the notification's ``first_attempt`` moves past every attempt
made so far, and its message goes through the outbox like a new notification's, numbered from
there. The fence is what makes that safe: an attempt of an older generation still in flight (a
message copy, a late outcome) is recognised by its number and ignored by the channel services and
the dispatcher. Only a ``failed`` notification can be redriven, and its row is locked while it is,
so an outcome recorded at the same moment cannot interleave. Nor can an attempt that was sent
(its outcome on its way) or that is still in flight under a live lease be redriven; one that may
have reached the recipient (unfinished, or failed after the hand-over) makes the redriven attempt
a possible duplicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from herald_common import outbox
from herald_common.messages import InvalidDelivery, delivery_message
from herald_common.schemas import Headers

from . import audit
from .bodies import parse_model, query_line, read_json
from .broker import BrokerLink, Handoff
from .database import Database
from .deliveries import PendingMessage, recipient_value, traceparent_of
from .errors import Conflict, FieldProblem, InvalidInput, NotFound
from .models import (
    PROJECT_PATTERN,
    DeadLetter,
    DeadLetterGroup,
    DeadLetterGroups,
    DeadLetterPage,
    DiscardFilter,
    DiscardResult,
    RedriveFilter,
    RedriveResult,
)
from .notifications import parse_id
from .pagination import KeysetQuery, encode_cursor, parse_limit
from .principal import VerifiedKey, principal
from .responses import json_model
from .settings import API_SETTINGS

log = structlog.get_logger("herald_api.dead_letters")

_OF_PROJECT = "(SELECT project FROM notifications n WHERE n.id = notification_id) = {0}"
"""A dead letter of the project's notifications: its notification looked up by id for each open
dead letter met (a correlated subquery, which PostgreSQL cannot turn into a scan of every
notification of the project, as it may an ``IN (SELECT ...)``)."""


def _open_matching(where: RedriveFilter, *, well_formed: bool) -> KeysetQuery:
    """The unresolved dead letters ``where`` matches, oldest first from its cursor (only those
    of a notification when ``well_formed``: a malformed message has nothing to redrive)."""
    query = KeysetQuery()
    query.add("resolved_at IS NULL")
    if well_formed:
        query.add("notification_id IS NOT NULL")
    if where.channel is not None:
        query.add("channel = {0}", where.channel)
    if where.reason is not None:
        query.add("reason = {0}", where.reason)
    if where.since is not None:
        query.add("dead_lettered_at >= {0}", where.since)
    if where.until is not None:
        query.add("dead_lettered_at < {0}", where.until)
    if where.project is not None:
        query.add(_OF_PROJECT, where.project)
    query.after("dead_lettered_at", where.cursor, ascending=True)
    return query


GROUPS_CAP = 100_000
"""Open dead letters counted at most when grouping them."""

_COLUMNS = """id, notification_id, project, channel, reason, last_error, attempts,
    dead_lettered_at, resolved_at, resolution"""
# Dead letters with their notification's project: derived by a join rather than stored, so the
# dispatcher, which writes dead letters, needs no change, and a project can never disagree with
# its notification's. A malformed message names no notification and so has no project.
_WITH_PROJECT = """(SELECT d.*, n.project FROM dead_letters d
    LEFT JOIN notifications n ON n.id = d.notification_id) AS dead_letters"""

# Requeues the failed notifications of the given open dead letters and resolves those. The new
# generation starts after the highest attempt known: the count, an attempt row numbered beyond it
# (an attempt started but never counted), or a dead letter's attempt (a message dead-lettered
# before anyone claimed it: the broker's delivery limit). Reusing that number would make the new
# generation's dead letter look like a repeat of the old one. Callers hold both rows' locks.
_REQUEUE = """
    WITH chosen AS (
        SELECT id, notification_id, dead_lettered_at FROM dead_letters
        WHERE id = ANY($1::uuid[]) AND resolved_at IS NULL AND notification_id IS NOT NULL
    ), requeued AS (
        UPDATE notifications n
        SET status = 'queued', failure_reason = NULL, next_attempt_at = NULL, updated_at = now(),
            first_attempt = 1 + GREATEST(
                n.attempts,
                (SELECT coalesce(max(a.attempt), 0) FROM attempts a WHERE a.notification_id = n.id),
                (SELECT coalesce(max(d.attempts), 0) FROM dead_letters d
                 WHERE d.notification_id = n.id)
            )
        FROM chosen c
        -- A redacted notification has no recipient or content left to send.
        WHERE n.id = c.notification_id AND n.status = 'failed' AND n.redacted_at IS NULL
        RETURNING c.id AS dead_letter_id, c.dead_lettered_at, n.id, n.channel, n.recipient,
                  n.content, n.metadata, n.correlation_id, n.created_at, n.first_attempt,
                  n.priority
    ), resolved AS (
        UPDATE dead_letters d SET resolved_at = now(), resolution = 'redriven'
        FROM requeued r
        WHERE d.id = r.dead_letter_id
    )
    SELECT * FROM requeued ORDER BY dead_lettered_at, dead_letter_id"""


@dataclass(frozen=True)
class _Attempts:
    """What the attempts so far say about redriving a notification."""

    sent: bool
    """An attempt was sent: the recipient has it, whatever the status says (its outcome is on
    its way); redriving would send it again."""
    leased: bool
    """An attempt is still in flight under a live lease: wait for it."""
    maybe_delivered: bool
    """An attempt may have reached the recipient (it never finished, or it failed after the
    hand-over): the redrive's attempt is marked a possible duplicate."""

    def refusal(self, notification_id: UUID) -> str | None:
        if self.sent:
            return f"notification {notification_id} was sent by an earlier attempt"
        if self.leased:
            return f"an attempt of notification {notification_id} is still in flight; retry later"
        return None


async def _attempts(connection: PoolConnectionProxy[Any], ids: list[UUID]) -> dict[UUID, _Attempts]:
    rows = await connection.fetch(
        """SELECT notification_id,
                  bool_or(result = 'sent') AS sent,
                  bool_or(finished_at IS NULL AND lease_expires_at > clock_timestamp()) AS leased,
                  bool_or(finished_at IS NULL OR maybe_delivered) AS maybe_delivered
           FROM attempts WHERE notification_id = ANY($1::uuid[])
           GROUP BY notification_id""",
        ids,
    )
    return {
        r["notification_id"]: _Attempts(
            bool(r["sent"]), bool(r["leased"]), bool(r["maybe_delivered"])
        )
        for r in rows
    }


_NO_ATTEMPTS = _Attempts(sent=False, leased=False, maybe_delivered=False)


@dataclass(frozen=True)
class _Requeued:
    dead_letter_id: UUID
    pending: PendingMessage


async def _fetch(connection: PoolConnectionProxy[Any], id: UUID) -> asyncpg.Record | None:
    return await connection.fetchrow(f"SELECT {_COLUMNS} FROM {_WITH_PROJECT} WHERE id = $1", id)


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter.model_validate(dict(row))


def _not_failed(notification_id: UUID, status: str | None) -> str:
    return (
        f"notification {notification_id} is {status or 'gone'}, not failed: only a failed "
        "notification can be redriven (discard this dead letter instead)"
    )


class DeadLetterStore:
    def __init__(self, database: Database, broker: BrokerLink, max_redrive: int) -> None:
        self._database = database
        self._broker = broker
        self._max_redrive = max_redrive

    async def page(
        self,
        *,
        project: str | None,
        channel: str | None,
        reason: str | None,
        include_resolved: bool,
        limit: int,
        cursor: str | None,
    ) -> DeadLetterPage:
        query = KeysetQuery()
        if not include_resolved:
            query.add("resolved_at IS NULL")
        if project is not None:
            query.add("project = {0}", project)
        if channel is not None:
            query.add("channel = {0}", channel)
        if reason is not None:
            query.add("reason = {0}", reason)
        query.after("dead_lettered_at", cursor)
        limit_arg = query.limit_placeholder(limit)
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM {_WITH_PROJECT} {query.where()}
                    ORDER BY dead_lettered_at DESC, id DESC LIMIT {limit_arg}""",
                *query.args,
            )
        items = [_dead_letter(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].dead_lettered_at, items[-1].id)
        return DeadLetterPage(items=items, next_cursor=next_cursor)

    async def groups(self, *, project: str | None) -> DeadLetterGroups:
        """Open dead letters by channel, reason and whether they parsed, counted up to
        ``GROUPS_CAP`` in all. Each part reads only open rows, through its partial index
        (dead_letters_one_open, dead_letters_open_malformed); a malformed message has no
        project, so it counts only when no project is asked for."""
        project_clause = f"AND {_OF_PROJECT.format('$2')}" if project is not None else ""
        malformed = (
            ""
            if project is not None
            else """UNION ALL
                (SELECT channel, reason, true FROM dead_letters
                 WHERE resolved_at IS NULL AND notification_id IS NULL LIMIT $1)"""
        )
        args: list[Any] = [GROUPS_CAP + 1] + ([project] if project is not None else [])
        async with self._database.connection() as connection, connection.transaction():
            # One snapshot: as_of is the instant the counts are of.
            as_of = await connection.fetchval("SELECT now()")
            rows = await connection.fetch(
                f"""SELECT channel, reason, malformed, count(*) AS n FROM (
                        (SELECT channel, reason, false AS malformed FROM dead_letters
                         WHERE resolved_at IS NULL AND notification_id IS NOT NULL
                         {project_clause} LIMIT $1)
                        {malformed}
                    ) open
                    GROUP BY channel, reason, malformed
                    ORDER BY n DESC, channel, reason, malformed""",
                *args,
            )
        groups = [
            DeadLetterGroup(
                channel=r["channel"], reason=r["reason"], count=r["n"], malformed=r["malformed"]
            )
            for r in rows
        ]
        return DeadLetterGroups(
            groups=groups, capped=sum(g.count for g in groups) > GROUPS_CAP, as_of=as_of
        )

    async def discard_matching(self, where: DiscardFilter, *, actor: VerifiedKey) -> DiscardResult:
        """Discard the unresolved dead letters the filter matches (malformed ones too, unless a
        project is named), oldest first, at most ``max_redrive`` per call; ``next_cursor``
        continues after the last one. Rows another request holds are passed over, not waited
        for: they are being redriven or discarded already."""
        query = _open_matching(where, well_formed=where.malformed is False)
        if where.malformed:
            query.add("notification_id IS NULL")
        limit_arg = query.limit_placeholder(self._max_redrive)
        async with self._database.transaction() as connection:
            candidates = await connection.fetch(
                f"""SELECT id, dead_lettered_at FROM dead_letters {query.where()}
                    ORDER BY dead_lettered_at, id LIMIT {limit_arg}""",
                *query.args,
            )
            examined = candidates[: self._max_redrive]
            discarded = [
                r["id"]
                for r in await connection.fetch(
                    """UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded'
                       WHERE id IN (SELECT id FROM dead_letters
                                    WHERE id = ANY($1::uuid[]) AND resolved_at IS NULL
                                    ORDER BY id FOR UPDATE SKIP LOCKED)
                       RETURNING id""",
                    [r["id"] for r in examined],
                )
            ]
            await audit.record(
                connection,
                actor,
                "dead_letters.discard",
                where.model_dump_json(exclude_none=True),
                {"discarded": [str(d) for d in discarded]},
            )
        more = len(candidates) > self._max_redrive
        next_cursor = (
            encode_cursor(examined[-1]["dead_lettered_at"], examined[-1]["id"]) if more else None
        )
        log.info("dead letters discarded", discarded=len(discarded))
        return DiscardResult(
            discarded=len(discarded),
            ids=discarded,
            skipped=len(examined) - len(discarded),
            next_cursor=next_cursor,
        )

    async def get(self, id: UUID) -> DeadLetter:
        async with self._database.connection() as connection:
            row = await _fetch(connection, id)
        if row is None:
            raise NotFound(f"no dead letter with id {id}")
        return _dead_letter(row)

    async def redrive(self, id: UUID, *, actor: VerifiedKey, traceparent: str | None) -> DeadLetter:
        """Queue the dead letter's failed notification again in a new attempt generation.

        409 when the dead letter is resolved or malformed, or its notification is not failed.
        Locks the notification, then the dead letter: the order the dispatcher takes them in.
        """
        async with self._database.connection() as connection:
            handoff = self._broker.handoff(1)
            try:
                async with connection.transaction():
                    row = await connection.fetchrow(
                        "SELECT notification_id FROM dead_letters WHERE id = $1", id
                    )
                    if row is None:
                        raise NotFound(f"no dead letter with id {id}")
                    notification_id = row["notification_id"]
                    if notification_id is None:
                        raise Conflict("cannot redrive a malformed message")
                    state = await connection.fetchrow(
                        "SELECT status, redacted_at FROM notifications WHERE id = $1 FOR UPDATE",
                        notification_id,
                    )
                    status = None if state is None else state["status"]
                    letter = await connection.fetchrow(
                        "SELECT resolution FROM dead_letters WHERE id = $1 FOR UPDATE", id
                    )
                    if letter is None:
                        raise NotFound(f"no dead letter with id {id}")
                    if letter["resolution"] is not None:
                        raise Conflict(
                            f"dead letter {id} is already resolved ({letter['resolution']})"
                        )
                    if status != "failed":
                        raise Conflict(_not_failed(notification_id, status))
                    if state is not None and state["redacted_at"] is not None:
                        raise Conflict(
                            f"notification {notification_id} was redacted (retention): its "
                            "recipient and content are gone, there is nothing to send"
                        )
                    attempts = (await _attempts(connection, [notification_id])).get(
                        notification_id, _NO_ATTEMPTS
                    )
                    refusal = attempts.refusal(notification_id)
                    if refusal is not None:
                        raise Conflict(refusal)
                    requeued = await self._requeue(
                        connection, [id], traceparent, handoff.delay,
                        maybe_delivered={notification_id} if attempts.maybe_delivered else set(),
                    )  # fmt: skip
                    resolved = await _fetch(connection, id)
                    await audit.record(connection, actor, "dead_letter.redrive", str(id))
            except BaseException:
                handoff.abandon()
                raise
        assert resolved is not None
        await self._broker.publish(handoff.committed([r.pending for r in requeued]))
        log.info("dead letter redriven", dead_letter_id=str(id))
        return _dead_letter(resolved)

    async def redrive_matching(
        self, where: RedriveFilter, *, actor: VerifiedKey, traceparent: str | None
    ) -> RedriveResult:
        """Redrive the unresolved, well-formed dead letters the filter matches, oldest first, at
        most ``max_redrive`` per call; ``next_cursor`` continues after the last one examined.

        A dead letter whose notification is not failed is skipped (left unresolved, counted). One
        that another request resolves meanwhile is waited for, then passed over.
        """
        query = _open_matching(where, well_formed=True)
        limit_arg = query.limit_placeholder(self._max_redrive)
        handoff: Handoff | None = None
        async with self._database.connection() as connection:
            try:
                async with connection.transaction():
                    candidates = await connection.fetch(
                        f"""SELECT id, notification_id, dead_lettered_at FROM dead_letters
                            {query.where()} ORDER BY dead_lettered_at, id LIMIT {limit_arg}""",
                        *query.args,
                    )
                    examined = candidates[: self._max_redrive]
                    # Notifications first, in one order, as every redrive locks them.
                    failed = {
                        r["id"]
                        for r in await connection.fetch(
                            """SELECT id, status, redacted_at FROM notifications
                               WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE""",
                            [c["notification_id"] for c in examined],
                        )
                        # A redacted one has nothing left to send: skipped, as one not failed.
                        if r["status"] == "failed" and r["redacted_at"] is None
                    }
                    # Resolved by another request while this one waited for the locks: passed.
                    still_open = {
                        r["id"]
                        for r in await connection.fetch(
                            """SELECT id FROM dead_letters
                               WHERE id = ANY($1::uuid[]) AND resolved_at IS NULL
                               ORDER BY id FOR UPDATE""",
                            [c["id"] for c in examined],
                        )
                    }
                    chosen = [c for c in examined if c["id"] in still_open]
                    attempts = await _attempts(connection, list(failed))
                    # Sent by an earlier attempt, or one still in flight: not redriven now.
                    failed -= {n for n, a in attempts.items() if a.refusal(n) is not None}
                    skipped = [c["id"] for c in chosen if c["notification_id"] not in failed]
                    redrive = [c["id"] for c in chosen if c["notification_id"] in failed]
                    handoff = self._broker.handoff(len(redrive))
                    requeued = await self._requeue(
                        connection, redrive, traceparent, handoff.delay,
                        maybe_delivered={n for n, a in attempts.items() if a.maybe_delivered},
                    )  # fmt: skip
                    await audit.record(
                        connection,
                        actor,
                        "dead_letters.redrive",
                        where.model_dump_json(exclude_none=True),
                        {
                            "redriven": [str(r.dead_letter_id) for r in requeued],
                            "skipped": [str(s) for s in skipped],
                        },
                    )
            except BaseException:
                if handoff is not None:
                    handoff.abandon()
                raise
        await self._broker.publish(handoff.committed([r.pending for r in requeued]))
        next_cursor = None
        if len(candidates) > self._max_redrive:
            last = examined[-1]
            next_cursor = encode_cursor(last["dead_lettered_at"], last["id"])
        log.info("dead letters redriven", count=len(requeued), skipped=len(skipped))
        return RedriveResult(
            redriven=len(requeued),
            ids=[r.dead_letter_id for r in requeued],
            notification_ids=[r.pending.message.notification_id for r in requeued],
            skipped=len(skipped),
            skipped_ids=skipped,
            next_cursor=next_cursor,
        )

    @staticmethod
    async def _requeue(
        connection: PoolConnectionProxy[Any],
        ids: list[UUID],
        traceparent: str | None,
        delay: float,
        *,
        maybe_delivered: set[UUID],
    ) -> list[_Requeued]:
        if not ids:
            return []
        rows = await connection.fetch(_REQUEUE, ids)
        try:
            messages = [
                delivery_message(
                    id=row["id"],
                    channel=row["channel"],
                    to=recipient_value(row["channel"], row["recipient"]),
                    content=row["content"],
                    metadata=row["metadata"],
                    correlation_id=row["correlation_id"],
                    created_at=row["created_at"],
                    attempt=row["first_attempt"],
                    traceparent=traceparent,
                    lane=row["priority"],
                )
                for row in rows
            ]
        except InvalidDelivery as exc:
            # The stored notification no longer makes a valid delivery for the current schema.
            raise Conflict(str(exc)) from None
        for message in messages:
            if message.notification_id in maybe_delivered:
                message.headers[Headers.MAYBE_DELIVERED] = 1
        outbox_ids = await outbox.insert(connection, messages, delay=delay)
        return [
            _Requeued(row["dead_letter_id"], PendingMessage(o, m))
            for o, m, row in zip(outbox_ids, messages, rows, strict=True)
        ]

    async def discard(self, id: UUID, *, actor: VerifiedKey) -> DeadLetter:
        async with self._database.transaction() as connection:
            discarded = await connection.fetchval(
                """UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded'
                   WHERE id = $1 AND resolved_at IS NULL RETURNING true""",
                id,
            )
            if not discarded:
                existing = await connection.fetchrow(
                    "SELECT resolution FROM dead_letters WHERE id = $1", id
                )
                if existing is None:
                    raise NotFound(f"no dead letter with id {id}")
                raise Conflict(f"dead letter {id} is already resolved ({existing['resolution']})")
            await audit.record(connection, actor, "dead_letter.discard", str(id))
            row = await _fetch(connection, id)
        assert row is not None
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


def _project(request: web.Request) -> str | None:
    # Admin only (the route's scope), so across every project unless told.
    project = query_line(request, "project")
    if project is not None and not re.fullmatch(PROJECT_PATTERN, project):
        raise InvalidInput([FieldProblem("project", "not a project name")])
    return project


async def list_dead_letters(request: web.Request) -> web.Response:
    params = request.query
    page = await request.app[DEAD_LETTERS].page(
        project=_project(request),
        channel=query_line(request, "channel"),
        reason=query_line(request, "reason"),
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
    resolved = await request.app[DEAD_LETTERS].redrive(
        id, actor=principal(request), traceparent=traceparent_of(request)
    )
    return json_model(resolved)


async def redrive_dead_letters(request: web.Request) -> web.Response:
    settings = request.app[API_SETTINGS]
    where = parse_model(RedriveFilter, await read_json(request, settings.api_max_body_bytes))
    log.info("bulk redrive requested", **where.model_dump(mode="json", exclude_none=True))
    result = await request.app[DEAD_LETTERS].redrive_matching(
        where, actor=principal(request), traceparent=traceparent_of(request)
    )
    return json_model(result)


async def group_dead_letters(request: web.Request) -> web.Response:
    return json_model(await request.app[DEAD_LETTERS].groups(project=_project(request)))


async def discard_dead_letters(request: web.Request) -> web.Response:
    settings = request.app[API_SETTINGS]
    where = parse_model(DiscardFilter, await read_json(request, settings.api_max_body_bytes))
    log.info("bulk discard requested", **where.model_dump(mode="json", exclude_none=True))
    return json_model(
        await request.app[DEAD_LETTERS].discard_matching(where, actor=principal(request))
    )


async def discard_dead_letter(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    return json_model(await request.app[DEAD_LETTERS].discard(id, actor=principal(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/dead-letters", list_dead_letters)
    app.router.add_get("/v1/dead-letters/groups", group_dead_letters)  # before {id}
    app.router.add_post("/v1/dead-letters/discard", discard_dead_letters)
    app.router.add_post("/v1/dead-letters/redrive", redrive_dead_letters)
    app.router.add_get("/v1/dead-letters/{id}", get_dead_letter)
    app.router.add_delete("/v1/dead-letters/{id}", discard_dead_letter)
    app.router.add_post("/v1/dead-letters/{id}/redrive", redrive_dead_letter)
