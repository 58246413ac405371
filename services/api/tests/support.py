"""Helpers of the API tests (imported as ``services.api.tests.support``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/"
"""Nothing listens on port 1: the broker is down for an API pointed here."""


async def wait_ready(client: Client, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"API not ready: {await response.text()}")
        await asyncio.sleep(0.05)


class WorkQueue:
    """The email work queue of the test's namespace, read with aio-pika."""

    def __init__(self, connection: AbstractRobustConnection, name: str) -> None:
        self._connection = connection
        self.name = name

    async def take(self, count: int, timeout: float = 15.0) -> list[AbstractIncomingMessage]:
        """Exactly ``count`` messages (fewer within ``timeout`` fails the test)."""
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self.name, passive=True)
            messages: list[AbstractIncomingMessage] = []
            deadline = time.monotonic() + timeout
            while len(messages) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{len(messages)} of {count} messages arrived")
                    await asyncio.sleep(0.05)
                    continue
                messages.append(message)
            return messages
        finally:
            await channel.close()

    async def depth(self) -> int:
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self.name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()


async def count(pool: asyncpg.Pool[Any], table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def outbox_drained(pool: asyncpg.Pool[Any], timeout: float = 10.0) -> int:
    """Outbox rows left once published rows are deleted: a single POST replies on commit and
    deletes its row after the broker confirms, so this waits (bounded) for that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := await count(pool, "outbox")) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return left


def email(**overrides: Any) -> dict[str, Any]:
    """A valid email notification request."""
    return {
        "channel": "email",
        "to": "someone@example.com",
        "content": {"subject": "Hello", "text": "Hi there", "html": "<p>Hi there</p>"},
        "metadata": {"order": 42},
        **overrides,
    }


async def dead_letter(
    pool: asyncpg.Pool[Any],
    notification_id: uuid.UUID | None,
    *,
    reason: str = "exhausted",
    attempts: int = 5,
    channel: str = "email",
    dead_lettered_at: str | None = None,
) -> uuid.UUID:
    """Dead-letter a notification as the dispatcher does: the row, and the notification failed."""
    id = uuid.uuid4()
    if notification_id is not None:
        await pool.execute(
            """UPDATE notifications SET status = 'failed', attempts = $2, failure_reason = $3,
                   last_error = 'smtp said no', updated_at = now()
               WHERE id = $1""",
            notification_id,
            attempts,
            reason,
        )
    await pool.execute(
        """INSERT INTO dead_letters (id, notification_id, channel, reason, last_error, attempts,
               body, headers, dead_lettered_at)
           VALUES ($1, $2, $3, $4, 'smtp said no', $5, $6, $7,
                   coalesce($8::text::timestamptz, clock_timestamp()))""",
        id,
        notification_id,
        channel,
        reason,
        attempts,
        b"{}",
        {"herald-attempt": attempts},
        dead_lettered_at,
    )
    return id
