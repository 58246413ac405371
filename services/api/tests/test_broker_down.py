from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import asyncpg
from yarl import URL

from herald_common.statuses import OUTBOX_CHANNEL
from services.api.tests.support import (
    CLOSED_BROKER,
    ClientFactory,
    WorkQueue,
    count,
    email,
    listening,
    wait_ready,
)


async def test_accepts_while_the_broker_is_down(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(amqp_url=CLOSED_BROKER, ready=False)
    async with listening(pool, OUTBOX_CHANNEL) as notified:
        response = await client.post("/v1/notifications", json=email())
        assert response.status == 202
        id = uuid.UUID((await response.json())["id"])
        assert await pool.fetchval("SELECT status FROM notifications WHERE id = $1", id) == "queued"
        row = await pool.fetchrow(
            "SELECT routing_key, headers, available_at <= now() AS due FROM outbox"
            " WHERE notification_id = $1",
            id,
        )
        assert row is not None
        assert row["routing_key"] == "email.default"
        assert row["headers"]["herald-attempt"] == 1
        # Left to the relay: due at once (no grace period to wait out), and the relay is woken.
        assert row["due"]
        async with asyncio.timeout(5):
            await notified.get()

    batch = await client.post("/v1/notifications/batch", json={"notifications": [email(), email()]})
    assert batch.status == 202
    assert await count(pool, "outbox") == 3

    # Readiness gates on the database alone, and shows the broker link.
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["checks"] == {"database": "ok"}
    assert body["info"]["broker"].startswith("unavailable")
    metrics = await (await client.get("/metrics")).text()
    assert "herald_api_broker_connected 0.0" in metrics
    assert "herald_outbox_left_to_relay_total 3.0" in metrics


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connects_once_the_broker_comes_up(
    make_client: ClientFactory,
    herald_env: dict[str, str],
    pool: asyncpg.Pool[Any],
    work_queue: WorkQueue,
) -> None:
    broker = URL(herald_env["HERALD_AMQP_URL"])
    port = _free_port()
    client = await make_client(amqp_url=str(broker.with_port(port)), ready=False)
    early = await client.post("/v1/notifications", json=email())
    assert early.status == 202
    assert (await (await client.get("/readyz")).json())["info"]["broker"] != "ok"

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(broker.host, broker.port)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    # The broker "comes up": something starts listening on the API's broker port.
    proxy = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        await wait_ready(client)
        late = await client.post("/v1/notifications", json=email())
        assert late.status == 202
        [message] = await work_queue.take(1)
        assert message.message_id == (await late.json())["id"]
        # What was accepted while the broker was down stays for the relay.
        async with asyncio.timeout(10):
            while await count(pool, "outbox") > 1:
                await asyncio.sleep(0.05)
        remaining = await pool.fetch("SELECT notification_id FROM outbox")
        assert [str(r["notification_id"]) for r in remaining] == [(await early.json())["id"]]
    finally:
        proxy.close()
