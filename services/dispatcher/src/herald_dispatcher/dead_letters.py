"""Dead letters: what a dead-lettered message says, and storing it for its notification's current
attempt only.

A redrive moves ``notifications.first_attempt`` past every attempt made so far and queues the
notification again. A dead letter of an older attempt that arrives after that (a late copy, a
redelivery) must neither fail the redriven notification nor reopen a dead letter an operator
resolved; nor may one fail a notification that was sent. Such letters are acked and counted, not
stored (``judge``).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from herald_common.schemas import Headers
from herald_common.text import safe_json, safe_text

from .headers import broker_reason, header_text, stored_headers
from .outcomes import Finished

STORED = "stored"
"""The verdict on a letter that was stored (every other verdict says why it was not)."""

_INT4 = range(-(2**31), 2**31)


@dataclass(frozen=True)
class DeadLetter:
    id: uuid.UUID
    notification_id: uuid.UUID | None
    channel: str
    reason: str
    last_error: str | None
    attempts: int | None
    """The number of the attempt that was dead-lettered (header ``herald-attempt``)."""
    body: bytes
    headers: dict[str, Any]
    dead_lettered_at: datetime

    def cleaned(self) -> DeadLetter:
        """The letter with its text made storable (no NUL, no lone surrogates)."""
        return replace(
            self,
            channel=safe_text(self.channel),
            reason=safe_text(self.reason),
            last_error=None if self.last_error is None else safe_text(self.last_error),
            headers=safe_json(self.headers),
        )

    def minimal(self) -> DeadLetter:
        """What is left when the letter as read cannot be stored: its identity, reason, error
        and body (bytea takes any bytes); not its headers, a time or attempt it claimed."""
        return replace(
            self.cleaned(),
            attempts=self.attempts if self.attempts in _INT4 else None,
            headers={},
            dead_lettered_at=datetime.now(UTC),
        )


@dataclass(frozen=True)
class NotificationState:
    status: str
    attempts: int
    first_attempt: int


def read_dead_letter(message: AbstractIncomingMessage, channel: str) -> DeadLetter:
    """What a dead-lettered message says about itself, whoever dead-lettered it (text cleaned)."""
    headers: dict[str, Any] = {str(k): v for k, v in (message.headers or {}).items()}
    notification_id: uuid.UUID | None = None
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError, IndexError):
        notification_id = uuid.UUID(str(json.loads(message.body)["id"]))
    reason = header_text(headers.get(Headers.DEAD_LETTER_REASON))
    if reason is None:
        # Dead-lettered by the broker (rejected, delivery_limit, expired).
        reason = broker_reason(headers)
    attempts: int | None = None
    with contextlib.suppress(TypeError, ValueError, KeyError):
        attempts = int(headers[Headers.ATTEMPT])
    at = datetime.now(UTC)
    with contextlib.suppress(KeyError, ValueError, TypeError):
        at = datetime.fromisoformat(str(header_text(headers[Headers.DEAD_LETTERED_AT])))
    return DeadLetter(
        id=uuid.uuid4(),
        notification_id=notification_id,
        channel=safe_text(channel),
        reason=reason,
        last_error=header_text(headers.get(Headers.LAST_ERROR)) or None,
        attempts=attempts,
        body=message.body,
        headers=stored_headers(headers),
        dead_lettered_at=at,
    )


def judge(
    letters: list[DeadLetter],
    notifications: Mapping[uuid.UUID, NotificationState],
    stored_attempts: set[tuple[uuid.UUID, int]],
) -> list[str]:
    """Per letter, ``STORED`` or why it is ignored.

    A letter is stored for its notification's current attempt only: not for a sent or canceled
    notification, not for an attempt below ``first_attempt`` (a redrive closed it) or below the
    latest attempt made, and not twice for one attempt (``stored_attempts``: letters already
    stored, open or resolved; letters earlier in ``letters`` count too). A letter without an
    attempt number (a malformed message) is stored unless its notification is sent or canceled;
    one without a known notification is stored without one, for an operator to look at.
    """
    seen = set(stored_attempts)
    verdicts: list[str] = []
    for letter in letters:
        state = notifications.get(letter.notification_id) if letter.notification_id else None
        verdict = STORED
        if state is None:
            pass
        elif state.status in ("sent", "canceled"):
            verdict = f"notification_{state.status}"
        elif letter.attempts is not None:
            assert letter.notification_id is not None
            key = (letter.notification_id, letter.attempts)
            if letter.attempts < state.first_attempt:
                verdict = "older_generation"
            elif letter.attempts < state.attempts:
                verdict = "superseded"
            elif key in seen:
                verdict = "duplicate"
            else:
                seen.add(key)
        verdicts.append(verdict)
    return verdicts


async def store_dead_letters(
    pool: asyncpg.Pool[Any], letters: list[DeadLetter], failed: list[Finished] | None = None
) -> list[str]:
    """Record the letters ``judge`` keeps and fail their notifications; per letter, ``STORED``
    or why not (``open_exists``: the notification has an open dead letter already). The
    notifications that became ``failed`` by it are added to ``failed``."""
    letters = [letter.cleaned() for letter in letters]
    ids = sorted({d.notification_id for d in letters if d.notification_id is not None})
    async with pool.acquire() as connection, connection.transaction():
        # Locked (in id order, so two batches cannot deadlock) against a concurrent redrive,
        # which moves first_attempt and the status, until the letters are in. The attempts
        # already dead-lettered come along per notification: a lookup by one notification stays
        # on dead_letters_by_notification even where the table was never analyzed.
        rows = await connection.fetch(
            """SELECT n.id, n.status, n.attempts, n.first_attempt,
                      ARRAY(SELECT d.attempts FROM dead_letters d
                            WHERE d.notification_id = n.id AND d.attempts IS NOT NULL) AS dead
               FROM notifications n WHERE n.id = ANY($1::uuid[]) ORDER BY n.id FOR UPDATE OF n""",
            ids,
        )
        notifications = {
            r["id"]: NotificationState(r["status"], r["attempts"], r["first_attempt"]) for r in rows
        }
        stored_attempts = {(r["id"], attempt) for r in rows for attempt in r["dead"]}
        verdicts = judge(letters, notifications, stored_attempts)
        kept = [d for d, v in zip(letters, verdicts, strict=True) if v == STORED]
        inserted = {
            r["id"]
            for r in await connection.fetch(
                """INSERT INTO dead_letters (id, notification_id, channel, reason, last_error,
                                             attempts, body, headers, dead_lettered_at)
                   SELECT i, n, c, r, e, a, b, h::jsonb, t
                   FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                               $6::int[], $7::bytea[], $8::text[], $9::timestamptz[])
                        AS d(i, n, c, r, e, a, b, h, t)
                   ON CONFLICT (notification_id) WHERE resolved_at IS NULL
                       AND notification_id IS NOT NULL DO NOTHING
                   RETURNING id""",
                [d.id for d in kept],
                [d.notification_id if d.notification_id in notifications else None for d in kept],
                [d.channel for d in kept],
                [d.reason for d in kept],
                [d.last_error for d in kept],
                [d.attempts for d in kept],
                [d.body for d in kept],
                [json.dumps(d.headers) for d in kept],
                [d.dead_lettered_at for d in kept],
            )
        }
        failing = [d for d in kept if d.id in inserted and d.notification_id in notifications]
        if failing:
            changed = await connection.fetch(
                """UPDATE notifications n
                   SET status = 'failed', failure_reason = d.reason,
                       last_error = COALESCE(d.last_error, n.last_error),
                       next_attempt_at = NULL, updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(id, reason, last_error)
                   WHERE n.id = d.id
                   RETURNING n.id, n.channel, n.priority, n.failure_reason, n.project""",
                [d.notification_id for d in failing],
                [d.reason for d in failing],
                [d.last_error for d in failing],
            )
            if failed is not None:
                failed.extend(
                    Finished(
                        r["channel"],
                        "failed",
                        r["priority"],
                        reason=r["failure_reason"],
                        project=r["project"],
                    )
                    for r in changed
                    if notifications[r["id"]].status != "failed"
                )
    return [
        "open_exists" if v == STORED and d.id not in inserted else v
        for d, v in zip(letters, verdicts, strict=True)
    ]
