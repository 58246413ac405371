"""Outcome events: reading them one by one, and moving notifications to the status they imply."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import ValidationError

from herald_common.schemas import SCHEMA_VERSION, AttemptOutcome, OutcomeBatch
from herald_common.text import safe_text

_STATUS_BY_DISPOSITION = {"sent": "sent", "retry": "retrying", "dead_letter": "failed"}

MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class RejectedItem:
    """An item of an outcome message that is not an outcome, and why."""

    item: Any
    error: str


@dataclass(frozen=True)
class ParsedOutcomes:
    """An outcome message read item by item: the good outcomes, the bad items, or (``error``) a
    message that is not an outcome batch at all."""

    outcomes: list[AttemptOutcome] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)
    error: str | None = None


def _short(error: str) -> str:
    error = safe_text(error)
    return error if len(error) <= MAX_ERROR_LENGTH else error[: MAX_ERROR_LENGTH - 1] + "…"


def parse_outcomes(body: bytes) -> ParsedOutcomes:
    """Read an ``OutcomeBatch`` message so that one bad item costs only itself.

    The whole batch is validated at once first (the usual case, fast); when that fails, the
    envelope is read with ``json`` (which, unlike pydantic's parser, takes the lone surrogates a
    provider's reply can carry: they are cleaned before storing) and each item validated alone.
    """
    try:
        return ParsedOutcomes(outcomes=OutcomeBatch.model_validate_json(body).outcomes)
    except ValidationError:
        pass
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return ParsedOutcomes(error=_short(f"not JSON: {exc}"))
    if not isinstance(envelope, dict) or not isinstance(envelope.get("outcomes"), list):
        return ParsedOutcomes(error="not an outcome batch: no list of outcomes")
    if envelope.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        version = envelope["version"]
        return ParsedOutcomes(error=_short(f"unknown outcome batch version {version!r}"))
    outcomes: list[AttemptOutcome] = []
    rejected: list[RejectedItem] = []
    for item in envelope["outcomes"]:
        try:
            outcomes.append(AttemptOutcome.model_validate(item))
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()
            )
            rejected.append(RejectedItem(item, _short(errors)))
    return ParsedOutcomes(outcomes, rejected)


def outcome_batch_body(items: list[Any]) -> bytes:
    """An outcome message holding just ``items`` (what the dispatcher dead-letters)."""
    return json.dumps({"version": SCHEMA_VERSION, "outcomes": items}, default=str).encode()


def _clean(text: str | None) -> str | None:
    return None if text is None else safe_text(text)


@dataclass(frozen=True)
class Finished:
    """A notification an outcome (or a dead letter) moved to ``sent`` or ``failed``: what the
    dispatcher's metrics count, once per change of status."""

    channel: str
    status: str
    lane: str = "normal"
    provider: str | None = None
    reason: str | None = None
    seconds: float | None = None
    """Sent: from acceptance (or ``send_at``, when later) to sent."""
    project: str = "default"


FINISHED = ("sent", "failed")


async def apply_outcomes(pool: asyncpg.Pool[Any], outcomes: list[AttemptOutcome]) -> list[Finished]:
    """Move each notification to the status its latest attempt's outcome implies.

    An outcome never overrides a later attempt (``attempts``), a final status, or a redrive:
    attempts below ``first_attempt`` belong to a generation a redrive closed. The one exception
    is the truth arriving late: a ``sent`` outcome of the current generation turns a ``failed``
    notification into ``sent`` (e.g. a delivery whose channel closed under it sent it after the
    broker had given up on its message), so it is not redriven and sent again. Text from the
    provider is cleaned first (PostgreSQL stores neither NUL nor lone surrogates). Returns the
    notifications whose status became ``sent`` or ``failed``.
    """
    latest: dict[uuid.UUID, AttemptOutcome] = {}
    for outcome in outcomes:
        known = latest.get(outcome.notification_id)
        if known is None or outcome.attempt >= known.attempt:
            latest[outcome.notification_id] = outcome
    rows = list(latest.values())
    async with pool.acquire() as connection, connection.transaction():
        # Row locks in id order, as the channel workers' claims and the redrive take them: an
        # UPDATE ... FROM unnest locks in whatever order its join yields, and deadlocks them.
        locked = await connection.fetch(
            """SELECT id, status FROM notifications WHERE id = ANY($1::uuid[])
               ORDER BY id FOR UPDATE""",
            [o.notification_id for o in rows],
        )
        was = {r["id"]: r["status"] for r in locked}
        changed = await _update(connection, rows)
    return [
        Finished(
            r["channel"],
            r["status"],
            r["priority"],
            r["provider"],
            r["failure_reason"],
            r["seconds"],
            r["project"],
        )
        for r in changed
        if r["status"] in FINISHED and was.get(r["id"]) != r["status"]
    ]


async def _update(connection: Any, rows: list[AttemptOutcome]) -> list[asyncpg.Record]:
    return await connection.fetch(  # type: ignore[no-any-return]
        """UPDATE notifications n SET
               status = o.status,
               attempts = GREATEST(n.attempts, o.attempt),
               last_error = COALESCE(o.error, n.last_error),
               failure_reason = CASE WHEN o.status = 'failed'
                   THEN CASE o.result WHEN 'permanent_failure' THEN 'permanent_failure'
                        ELSE 'retries_exhausted' END
                   WHEN o.status = 'sent' THEN NULL
                   ELSE n.failure_reason END,
               provider = COALESCE(o.provider, n.provider),
               provider_message_id = COALESCE(o.provider_message_id, n.provider_message_id),
               next_attempt_at = o.next_attempt_at,
               sent_at = CASE WHEN o.status = 'sent' THEN o.finished_at ELSE n.sent_at END,
               updated_at = now()
           FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::timestamptz[], $9::timestamptz[])
                AS o(id, attempt, result, status, error, provider, provider_message_id,
                     finished_at, next_attempt_at)
           WHERE n.id = o.id AND o.attempt >= n.first_attempt
             AND ((n.attempts <= o.attempt AND n.status NOT IN ('sent', 'failed', 'canceled'))
                  OR (o.status = 'sent' AND n.status = 'failed'))
           RETURNING n.id, n.status, n.channel, n.priority, n.provider, n.failure_reason, n.project,
                     EXTRACT(EPOCH FROM n.sent_at - GREATEST(n.created_at, n.send_at))::float8
                         AS seconds""",
        [o.notification_id for o in rows],
        [o.attempt for o in rows],
        [o.result for o in rows],
        [_STATUS_BY_DISPOSITION[o.disposition] for o in rows],
        [_clean(o.error) for o in rows],
        [_clean(o.provider) for o in rows],
        [_clean(o.provider_message_id) for o in rows],
        [o.finished_at for o in rows],
        [o.next_attempt_at for o in rows],
    )
