"""The transactional outbox: a notification's message is committed with it, then published.

The API inserts outbox rows in the notification's transaction with ``available_at`` a grace period
ahead, publishes right after commit and deletes the rows the broker confirmed. The dispatcher's
relay publishes rows whose ``available_at`` has passed: those the API could not publish (broker
down, crash between commit and confirm) and, later, scheduled sends and redrives. A row the relay
cannot publish waits a backoff of its own before its next try (``publish_backoff``).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from . import tracing
from .amqp import Outgoing, Publisher
from .channels import channel_of
from .schemas import Headers
from .text import safe_text

if TYPE_CHECKING:
    from .db import Executor


@dataclass(frozen=True)
class OutboxMessage:
    notification_id: UUID
    routing_key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None


async def insert(
    connection: Executor,
    messages: Sequence[OutboxMessage],
    delay: float,
    due: Sequence[datetime | None] | None = None,
) -> list[int]:
    """Add ``messages`` (one per notification) to the outbox, inside the caller's transaction,
    due after ``delay`` seconds, or at the time ``due`` gives for a message (a scheduled one);
    returns their row ids in the order of ``messages``."""
    rows = await connection.fetch(
        """INSERT INTO outbox (notification_id, routing_key, body, headers, available_at)
           SELECT n, r, b, h::jsonb, COALESCE(d, now() + make_interval(secs => $5))
           FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], $6::timestamptz[])
                AS m(n, r, b, h, d)
           RETURNING id, notification_id""",
        [m.notification_id for m in messages],
        *columns(messages),
        delay,
        list(due) if due is not None else [None] * len(messages),
    )
    # RETURNING order is not promised for INSERT ... SELECT: match rows back by notification.
    ids = {r["notification_id"]: r["id"] for r in rows}
    return [ids[m.notification_id] for m in messages]


def columns(messages: Sequence[OutboxMessage]) -> tuple[list[str], list[bytes], list[str]]:
    """The routing keys, bodies and headers (JSON, with the correlation id) of ``messages``, as
    the arrays an outbox insert takes; statements that insert outbox rows together with their
    notifications (one round trip) use it too."""
    return (
        [m.routing_key for m in messages],
        [m.body for m in messages],
        [json.dumps({**m.headers, "correlation_id": m.correlation_id}) for m in messages],
    )


def by_channel(routing_keys: Sequence[str]) -> Counter[str]:
    """How many of the messages with these routing keys each channel has (for metrics)."""
    return Counter(channel_of(key) for key in routing_keys)


class Relayed(tuple[int, int]):
    """What a relay pass did: ``(published, failed)``, and ``channels``: published by channel."""

    channels: Counter[str]

    def __new__(cls, published: int, failed: int, channels: Counter[str] | None = None) -> Relayed:
        relayed = super().__new__(cls, (published, failed))
        relayed.channels = channels if channels is not None else Counter()
        return relayed


async def publish(
    publisher: Publisher, exchange: str, messages: Sequence[OutboxMessage]
) -> list[bool]:
    """Publish all messages with their confirms in flight together; True where confirmed."""
    return [error is None for error in await _publish_all(publisher, exchange, messages)]


async def _publish_all(
    publisher: Publisher, exchange: str, messages: Sequence[OutboxMessage]
) -> list[Exception | None]:
    """Publish all messages, confirms in flight together; per message, None or its error."""
    if tracing.enabled():
        results = await asyncio.gather(
            *(_publish_traced(publisher, exchange, m) for m in messages), return_exceptions=True
        )
    else:
        # One write and one wait for all their confirms: a publish apiece (a task, a timeout
        # and a frame each) cost more than everything else the dispatcher does for a campaign.
        return list(await publisher.publish_many(exchange, [_outgoing(m) for m in messages]))
    errors: list[Exception | None] = []
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancellation and the like are not a failed publish
        errors.append(result if isinstance(result, Exception) else None)
    return errors


async def _publish_traced(publisher: Publisher, exchange: str, m: OutboxMessage) -> None:
    """A publish as a span of the notification's trace; the message carries the span on."""
    stored = m.headers.get(Headers.TRACEPARENT)
    with tracing.span(
        f"publish {m.routing_key}",
        traceparent=stored if isinstance(stored, str) else None,
        kind=tracing.SpanKind.PRODUCER,
        attributes={"herald.notification_id": str(m.notification_id)},
    ):
        headers = dict(m.headers)
        traceparent = tracing.current_traceparent()
        if traceparent is not None:
            headers[Headers.TRACEPARENT] = traceparent
        # A batch of one: outbox publishes all go through publish_many's check of ids in flight.
        [error] = await publisher.publish_many(exchange, [_outgoing(m, headers)])
        if error is not None:
            raise error


def _outgoing(m: OutboxMessage, headers: dict[str, Any] | None = None) -> Outgoing:
    """An outbox message as published: under its notification's id (how a return finds it, and
    how ``publish_many`` tells a second publish of it in flight)."""
    return Outgoing(
        m.routing_key,
        m.body,
        m.headers if headers is None else headers,
        message_id=str(m.notification_id),
        correlation_id=m.correlation_id,
    )


async def delete(connection: Executor, ids: list[int]) -> None:
    if ids:
        await connection.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)


MAX_BACKOFF = 60.0
"""Longest a failing outbox row waits between publish attempts (seconds)."""


def publish_backoff(attempts: int, *, base: float = 1.0, cap: float = MAX_BACKOFF) -> float:
    """Seconds a row waits after its ``attempts``-th failed publish: doubling from ``base``,
    capped, so a row that keeps failing is retried about once a ``cap``."""
    return min(cap, base * 2.0 ** min(max(attempts - 1, 0), 32))


async def relay_due(
    pool: asyncpg.Pool[Any],
    publisher: Publisher,
    exchange: str,
    limit: int,
    *,
    base_backoff: float = 1.0,
    max_backoff: float = MAX_BACKOFF,
) -> Relayed:
    """Publish up to ``limit`` due rows; returns (published, failed) with the published rows
    counted by channel.

    ``FOR UPDATE SKIP LOCKED`` keeps replicas of the relay off each other's rows. Rows of
    scheduled notifications fall due at their ``send_at``: publishing them queues them. A row whose
    publish failed is moved back by its own backoff (``publish_backoff``) with the error kept, so
    rows that keep failing (say, unroutable) never hold up the rows behind them.
    """
    async with pool.acquire() as connection, connection.transaction():
        # The outbox_due index (available_at, id) serves both the range and the order.
        rows = await connection.fetch(
            """SELECT id, notification_id, routing_key, body, headers, publish_attempts
               FROM outbox WHERE available_at <= now() ORDER BY available_at, id
               LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        if not rows:
            return Relayed(0, 0)
        messages = []
        for row in rows:
            headers = dict(row["headers"])
            correlation_id = headers.pop("correlation_id", None)
            messages.append(
                OutboxMessage(
                    row["notification_id"], row["routing_key"], row["body"], headers, correlation_id
                )
            )
        errors = await _publish_all(publisher, exchange, messages)
        published = [r for r, e in zip(rows, errors, strict=True) if e is None]
        await delete(connection, [r["id"] for r in published])
        # Scheduled notifications whose time came are queued now; one a channel service claimed
        # meanwhile is left as it is (``sending``). Locked in id order first, as the claims lock
        # them: an UPDATE over an id list locks in its plan's order and could deadlock a claim.
        await connection.execute(
            """UPDATE notifications SET status = 'queued', updated_at = now()
               WHERE id IN (SELECT id FROM notifications
                            WHERE id = ANY($1::uuid[]) AND status = 'scheduled'
                            ORDER BY id FOR UPDATE)""",
            [r["notification_id"] for r in published if r["notification_id"] is not None],
        )
        failed = [(r, e) for r, e in zip(rows, errors, strict=True) if e is not None]
        if failed:
            await connection.execute(
                """UPDATE outbox o SET publish_attempts = o.publish_attempts + 1,
                       available_at = now() + make_interval(secs => f.wait),
                       last_error = f.error
                   FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS f(id, wait, error)
                   WHERE o.id = f.id""",
                [r["id"] for r, _ in failed],
                [
                    publish_backoff(r["publish_attempts"] + 1, base=base_backoff, cap=max_backoff)
                    for r, _ in failed
                ],
                [safe_text(str(e) or type(e).__name__)[:1000] for _, e in failed],
            )
    return Relayed(
        len(rows) - len(failed), len(failed), by_channel([r["routing_key"] for r in published])
    )


async def rows_in_backoff(executor: Executor) -> int:
    """Outbox rows whose last publish failed (served by the partial index outbox_in_backoff)."""
    count = await executor.fetchval("SELECT count(*) FROM outbox WHERE publish_attempts > 0")
    return int(count or 0)
