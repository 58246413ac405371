"""Persisting what channel services report: outcome events and dead letters.

Both consumers gather messages across deliveries into one statement (``Batcher``), ack only after
the commit, and dead-letter a message they cannot parse instead of crashing or requeueing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from herald_common.amqp import Publisher
from herald_common.batching import Batcher
from herald_common.errors import PublishError
from herald_common.schemas import AttemptOutcome, Headers, OutcomeBatch
from herald_common.topology import Topology

log = structlog.get_logger("herald.dispatcher")

_STATUS_BY_DISPOSITION = {"sent": "sent", "retry": "retrying", "dead_letter": "failed"}


async def apply_outcomes(pool: asyncpg.Pool[Any], outcomes: list[AttemptOutcome]) -> None:
    """Move each notification to the status its latest attempt's outcome implies.

    An outcome never overrides a later attempt (``attempts``) or a final status.
    """
    latest: dict[uuid.UUID, AttemptOutcome] = {}
    for outcome in outcomes:
        known = latest.get(outcome.notification_id)
        if known is None or outcome.attempt >= known.attempt:
            latest[outcome.notification_id] = outcome
    rows = list(latest.values())
    await pool.execute(
        """UPDATE notifications n SET
               status = o.status,
               attempts = GREATEST(n.attempts, o.attempt),
               last_error = COALESCE(o.error, n.last_error),
               failure_reason = CASE WHEN o.status = 'failed'
                   THEN CASE o.result WHEN 'permanent_failure' THEN 'permanent_failure'
                        ELSE 'retries_exhausted' END
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
           WHERE n.id = o.id AND n.attempts <= o.attempt
             AND n.status NOT IN ('sent', 'failed', 'canceled')""",
        [o.notification_id for o in rows],
        [o.attempt for o in rows],
        [o.result for o in rows],
        [_STATUS_BY_DISPOSITION[o.disposition] for o in rows],
        [o.error for o in rows],
        [o.provider for o in rows],
        [o.provider_message_id for o in rows],
        [o.finished_at for o in rows],
        [o.next_attempt_at for o in rows],
    )


@dataclass(frozen=True)
class DeadLetter:
    id: uuid.UUID
    notification_id: uuid.UUID | None
    channel: str
    reason: str
    last_error: str | None
    attempts: int | None
    body: bytes
    headers: dict[str, Any]
    dead_lettered_at: datetime


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def read_dead_letter(message: AbstractIncomingMessage, channel: str) -> DeadLetter:
    """What a dead-lettered message says about itself, whoever dead-lettered it."""
    headers: dict[str, Any] = {str(k): v for k, v in (message.headers or {}).items()}
    notification_id: uuid.UUID | None = None
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError, IndexError):
        notification_id = uuid.UUID(str(json.loads(message.body)["id"]))
    reason = _text(headers.get(Headers.DEAD_LETTER_REASON))
    if reason is None:
        # Dead-lettered by the broker (rejected, delivery_limit, expired).
        reason = _text(headers.get("x-first-death-reason")) or "unknown"
    attempts: int | None = None
    with contextlib.suppress(TypeError, ValueError, KeyError):
        attempts = int(headers[Headers.ATTEMPT])
    at = datetime.now(UTC)
    with contextlib.suppress(KeyError, ValueError, TypeError):
        at = datetime.fromisoformat(str(_text(headers[Headers.DEAD_LETTERED_AT])))
    return DeadLetter(
        id=uuid.uuid4(),
        notification_id=notification_id,
        channel=channel,
        reason=reason,
        last_error=_text(headers.get(Headers.LAST_ERROR)) or None,
        attempts=attempts,
        body=message.body,
        headers={k: _jsonable(v) for k, v in headers.items()},
        dead_lettered_at=at,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


async def store_dead_letters(pool: asyncpg.Pool[Any], letters: list[DeadLetter]) -> None:
    """Record dead letters and fail their notifications; a repeat of an open one is ignored."""
    async with pool.acquire() as connection, connection.transaction():
        known = {
            r["id"]
            for r in await connection.fetch(
                "SELECT id FROM notifications WHERE id = ANY($1::uuid[])",
                [d.notification_id for d in letters if d.notification_id],
            )
        }
        await connection.executemany(
            """INSERT INTO dead_letters (id, notification_id, channel, reason, last_error,
                                         attempts, body, headers, dead_lettered_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
               ON CONFLICT (notification_id) WHERE resolved_at IS NULL
                   AND notification_id IS NOT NULL DO NOTHING""",
            [
                (
                    d.id,
                    d.notification_id if d.notification_id in known else None,
                    d.channel,
                    d.reason,
                    d.last_error,
                    d.attempts,
                    d.body,
                    d.headers,
                    d.dead_lettered_at,
                )
                for d in letters
            ],
        )
        failed = [d for d in letters if d.notification_id in known]
        if failed:
            await connection.execute(
                """UPDATE notifications n
                   SET status = 'failed', failure_reason = d.reason,
                       last_error = COALESCE(d.last_error, n.last_error),
                       next_attempt_at = NULL, updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(id, reason, last_error)
                   WHERE n.id = d.id AND n.status NOT IN ('sent', 'canceled')""",
                [d.notification_id for d in failed],
                [d.reason for d in failed],
                [d.last_error for d in failed],
            )


Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Consumers:
    """The dispatcher's consumers: outcome events, and each channel's dead-letter queue."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        pool: asyncpg.Pool[Any],
        publisher: Publisher,
        topology: Topology,
        *,
        prefetch: int,
        registry: CollectorRegistry,
    ) -> None:
        self._connection = connection
        self._pool = pool
        self._publisher = publisher
        self._topology = topology
        self._prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._consumers: list[tuple[Any, str]] = []
        self._outcome_batches: Batcher[AttemptOutcome, None] = Batcher(self._apply, max_size=2000)
        self._dead_letters: Batcher[DeadLetter, None] = Batcher(self._store, max_size=500)
        self._applied = Counter(
            "herald_outcomes_applied_total", "Outcome events persisted.", registry=registry
        )
        self._dead_lettered = Counter(
            "herald_dead_letters_stored_total",
            "Dead letters persisted, by channel and reason.",
            ["channel", "reason"],
            registry=registry,
        )

    async def _apply(self, outcomes: list[AttemptOutcome]) -> list[None]:
        await apply_outcomes(self._pool, outcomes)
        self._applied.inc(len(outcomes))
        return [None] * len(outcomes)

    async def _store(self, letters: list[DeadLetter]) -> list[None]:
        await store_dead_letters(self._pool, letters)
        for letter in letters:
            self._dead_lettered.labels(letter.channel, letter.reason).inc()
        return [None] * len(letters)

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # declare_queue (not get_queue): a robust channel restores only what it declared, so
        # these consumers come back by themselves after a reconnect.
        queue = await self._channel.declare_queue(
            self._topology.outcomes_queue,
            durable=True,
            arguments=self._topology.outcomes_queue_arguments(),
        )
        self._consumers.append((queue, await queue.consume(self._on_outcomes)))
        for channel in self._topology.channels:
            dead = await self._channel.declare_queue(
                self._topology.dead_letter_queue(channel),
                durable=True,
                arguments=self._topology.dead_letter_queue_arguments(),
            )
            self._consumers.append((dead, await dead.consume(self._dead_letter_handler(channel))))

    async def stop(self) -> None:
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        await self._outcome_batches.close()
        await self._dead_letters.close()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def _on_outcomes(self, message: AbstractIncomingMessage) -> None:
        try:
            batch = OutcomeBatch.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("dead-lettering a malformed outcome message", error=str(exc)[:500])
            try:
                await self._publisher.publish(
                    self._topology.dead_letter_exchange,
                    "outcomes",
                    message.body,
                    headers={
                        Headers.DEAD_LETTER_REASON: "malformed",
                        Headers.LAST_ERROR: str(exc)[:1000],
                        Headers.DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
                    },
                )
            except PublishError:
                return  # left unacked: it comes back once the channel recovers
            await message.ack()
            return
        # PostgreSQL failing is retried here, holding the message: a nack would count towards
        # the queue's delivery limit and dead-letter outcomes that are merely late.
        await _until_stored(
            lambda: asyncio.gather(*(self._outcome_batches.submit(o) for o in batch.outcomes)),
            "outcomes",
        )
        await message.ack()

    def _dead_letter_handler(self, channel: str) -> Handler:
        async def handle(message: AbstractIncomingMessage) -> None:
            letter = read_dead_letter(message, channel)
            await _until_stored(lambda: self._dead_letters.submit(letter), "a dead letter")
            log.info(
                "dead letter stored",
                notification_id=str(letter.notification_id),
                reason=letter.reason,
            )
            await message.ack()

        return handle


async def _until_stored(store: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``store`` until PostgreSQL takes it, backing off; a stop cancels the wait (the
    message stays unacked and is redelivered)."""
    delay = 0.5
    while True:
        try:
            await store()
            return
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("could not store; retrying", what=what, error=repr(exc), retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
