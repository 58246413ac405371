"""The transactional outbox: a notification's message is committed with it, then published.

The API inserts outbox rows in the notification's transaction with ``available_at`` a grace period
ahead, publishes right after commit and deletes the rows the broker confirmed. The dispatcher's
relay publishes rows whose ``available_at`` has passed: those the API could not publish (broker
down, crash between commit and confirm) and, later, scheduled sends and redrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from .amqp import Publisher

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
    connection: Executor, messages: Sequence[OutboxMessage], delay: float
) -> list[int]:
    """Add ``messages`` (one per notification) to the outbox, inside the caller's transaction;
    returns their row ids in the order of ``messages``."""
    rows = await connection.fetch(
        """INSERT INTO outbox (notification_id, routing_key, body, headers, available_at)
           SELECT n, r, b, h::jsonb, now() + make_interval(secs => $5)
           FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[]) AS m(n, r, b, h)
           RETURNING id, notification_id""",
        [m.notification_id for m in messages],
        [m.routing_key for m in messages],
        [m.body for m in messages],
        [json.dumps({**m.headers, "correlation_id": m.correlation_id}) for m in messages],
        delay,
    )
    # RETURNING order is not promised for INSERT ... SELECT: match rows back by notification.
    ids = {r["notification_id"]: r["id"] for r in rows}
    return [ids[m.notification_id] for m in messages]


async def publish(
    publisher: Publisher, exchange: str, messages: Sequence[OutboxMessage]
) -> list[bool]:
    """Publish all messages with their confirms in flight together; True where confirmed."""
    results = await asyncio.gather(
        *(
            publisher.publish(
                exchange,
                m.routing_key,
                m.body,
                headers=m.headers,
                message_id=str(m.notification_id),
                correlation_id=m.correlation_id,
            )
            for m in messages
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    return [not isinstance(r, BaseException) for r in results]


async def delete(connection: Executor, ids: list[int]) -> None:
    if ids:
        await connection.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)


async def relay_due(
    pool: asyncpg.Pool[Any], publisher: Publisher, exchange: str, limit: int
) -> tuple[int, int]:
    """Publish up to ``limit`` due rows; returns (published, failed).

    ``FOR UPDATE SKIP LOCKED`` keeps replicas of the relay off each other's rows; a row whose
    publish failed stays for the next pass.
    """
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            """SELECT id, notification_id, routing_key, body, headers FROM outbox
               WHERE available_at <= now() ORDER BY available_at, id
               LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        if not rows:
            return 0, 0
        messages = []
        for row in rows:
            headers = dict(row["headers"])
            correlation_id = headers.pop("correlation_id", None)
            messages.append(
                OutboxMessage(
                    row["notification_id"], row["routing_key"], row["body"], headers, correlation_id
                )
            )
        confirmed = await publish(publisher, exchange, messages)
        await delete(connection, [r["id"] for r, ok in zip(rows, confirmed, strict=True) if ok])
    published = sum(confirmed)
    return published, len(rows) - published
