"""``POST /v1/notifications/batch`` honours ``Idempotency-Key`` as the single POST does."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from services.api.tests.support import Client, WorkQueue, count, email, outbox_drained

BATCH = {"notifications": [email(to=f"user{i}@example.com") for i in range(5)]}


async def test_a_repeated_batch_replays_the_notifications_it_made(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    headers = {"Idempotency-Key": "nightly-digest-2030-01-01"}
    first = await client.post("/v1/notifications/batch", json=BATCH, headers=headers)
    assert first.status == 202, await first.text()
    assert "Idempotent-Replayed" not in first.headers
    made = [n["id"] for n in (await first.json())["notifications"]]
    await work_queue.take(5)

    again = await client.post("/v1/notifications/batch", json=BATCH, headers=headers)
    assert again.status == 200, await again.text()
    assert again.headers["Idempotent-Replayed"] == "true"
    replayed = (await again.json())["notifications"]
    assert [n["id"] for n in replayed] == made
    assert [n["to"] for n in replayed] == [f"user{i}@example.com" for i in range(5)]
    assert await count(pool, "notifications") == 5
    assert await outbox_drained(pool) == 0
    assert await work_queue.depth() == 0

    changed = {"notifications": [*BATCH["notifications"], email()]}
    conflict = await client.post("/v1/notifications/batch", json=changed, headers=headers)
    assert conflict.status == 409
    assert conflict.content_type == "application/problem+json"
    assert await count(pool, "notifications") == 5
    assert await count(pool, "outbox") == 0
    assert await work_queue.depth() == 0

    # Keys of batches and of single notifications do not meet.
    single = await client.post("/v1/notifications", json=email(), headers=headers)
    assert single.status == 202


async def test_concurrent_batches_with_one_key_store_one_batch(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    headers = {"Idempotency-Key": "racing-batch"}
    responses = await asyncio.gather(
        *(client.post("/v1/notifications/batch", json=BATCH, headers=headers) for _ in range(6))
    )
    assert sorted(r.status for r in responses) == [200] * 5 + [202]
    orders = {tuple(n["id"] for n in (await r.json())["notifications"]) for r in responses}
    assert len(orders) == 1
    assert await count(pool, "notifications") == 5
    assert await count(pool, "notification_batches") == 1
    await work_queue.take(5)
    assert await outbox_drained(pool) == 0
    assert await work_queue.depth() == 0
