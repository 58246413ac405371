"""Publishing after commit is bounded: past the bound, rows are left to the relay (woken)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from yarl import URL

from herald_common.statuses import OUTBOX_CHANNEL
from services.api.tests.support import (
    ClientFactory,
    StallingProxy,
    WorkQueue,
    count,
    email,
    listening,
)


def _metric(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_a_slow_broker_piles_nothing_up(
    make_client: ClientFactory,
    herald_env: dict[str, str],
    pool: asyncpg.Pool[Any],
    work_queue: WorkQueue,
) -> None:
    broker = URL(herald_env["HERALD_AMQP_URL"])
    assert broker.host is not None
    assert broker.port is not None
    proxy = await StallingProxy(broker.host, broker.port).start()
    try:
        client = await make_client(
            amqp_url=str(broker.with_port(proxy.port)),
            api_max_pending_publishes=3,
            publish_timeout=60,
        )
        proxy.stall()  # the broker takes messages and confirms nothing
        async with listening(pool, OUTBOX_CHANNEL) as notified:
            async with asyncio.timeout(10):  # replies do not wait for the broker
                for _ in range(10):
                    response = await client.post("/v1/notifications", json=email())
                    assert response.status == 202
            metrics = await (await client.get("/metrics")).text()
            assert _metric(metrics, "herald_api_pending_publishes") == 3
            assert _metric(metrics, "herald_outbox_left_to_relay_total") == 7
            # The seven left to the relay are due at once; the relay hears of them.
            assert (
                await pool.fetchval("SELECT count(*) FROM outbox WHERE available_at <= now()") == 7
            )
            async with asyncio.timeout(5):
                await notified.get()

        proxy.resume()
        await work_queue.take(3)
        # What the API published is gone from the outbox; the rest is the relay's.
        async with asyncio.timeout(10):
            while await count(pool, "outbox") > 7:
                await asyncio.sleep(0.05)
        assert await count(pool, "outbox") == 7
        assert await pool.fetchval("SELECT bool_and(available_at <= now()) FROM outbox")
        metrics = await (await client.get("/metrics")).text()
        assert _metric(metrics, "herald_api_pending_publishes") == 0
    finally:
        await proxy.close()


async def test_relay_wakeups_are_coalesced(
    make_client: ClientFactory, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    client = await make_client(api_max_pending_publishes=0)  # everything goes to the relay
    async with listening(pool, OUTBOX_CHANNEL) as notified:
        responses = await asyncio.gather(
            *(client.post("/v1/notifications", json=email()) for _ in range(30))
        )
        assert {r.status for r in responses} == {202}
        await asyncio.sleep(2.5)  # past the window of the trailing NOTIFY
    # At most one NOTIFY a second (and a trailing one), never one per request.
    assert 1 <= notified.qsize() <= 4
    assert await count(pool, "outbox") == 30
    assert await work_queue.depth() == 0
