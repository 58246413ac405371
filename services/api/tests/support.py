"""Helpers of the API tests (imported as ``services.api.tests.support``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiohttp import web
from aiohttp.test_utils import TestClient

from herald_api.keys import create_key
from herald_api.models import DEFAULT_PROJECT, SCOPES, KeyRequest

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

ADMIN_SECRET = "hrld_tests_bootstrap_" + "0123456789abcdef" * 3
"""The bootstrap key of every test API (``HERALD_API_BOOTSTRAP_KEY``): send, read and admin."""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def new_key(
    pool: asyncpg.Pool[Any],
    *scopes: str,
    project: str = DEFAULT_PROJECT,
    rate_limit: float | None = None,
) -> tuple[uuid.UUID, str]:
    """A new API key (id, secret) made as ``herald-keys create`` makes one."""
    request = KeyRequest.model_validate(
        {
            "name": "test",
            "project": project,
            "scopes": list(scopes or SCOPES),
            "rate_limit": rate_limit,
        }
    )
    async with pool.acquire() as connection:
        created = await create_key(connection, request, actor=None)
    return created.id, created.secret


CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/"
"""Nothing listens on port 1: the broker is down for an API pointed here."""


async def wait_ready(client: Client, timeout: float = 20.0, *, broker: bool = True) -> None:
    """Until the API is ready and (unless told otherwise) its broker link is up: readiness does
    not wait for the broker, but tests that expect the API to publish do."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        body = await response.json()
        if response.status == 200 and (not broker or body["info"]["broker"] == "ok"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"API not ready: {body}")
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


@contextlib.asynccontextmanager
async def listening(pool: asyncpg.Pool[Any], channel: str) -> AsyncIterator[asyncio.Queue[str]]:
    """LISTEN on ``channel`` while the block runs; each NOTIFY's payload arrives in the queue."""
    received: asyncio.Queue[str] = asyncio.Queue()

    def notified(connection: Any, pid: int, channel: str, payload: object) -> None:
        received.put_nowait(str(payload))

    async with pool.acquire() as connection:
        await connection.add_listener(channel, notified)
        try:
            yield received
        finally:
            await connection.remove_listener(channel, notified)


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


class StallingProxy:
    """A TCP proxy to the broker that can stop passing the broker's replies on (``stall``), as a
    broker that takes the API's messages but is too slow to confirm them."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        await asyncio.gather(
            self._pipe(reader, upstream_writer, gated=False),
            self._pipe(upstream_reader, writer, gated=True),
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gated:
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
