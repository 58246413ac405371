from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg

from herald_common.schemas import EmailDelivery, Headers, parse_delivery
from services.api.tests.support import Client, WorkQueue, count, email, outbox_drained


async def test_post_stores_publishes_and_clears_the_outbox(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    response = await client.post(
        "/v1/notifications",
        json=email(),
        headers={
            "X-Correlation-Id": "corr-123",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert response.status == 202
    body = await response.json()
    assert response.headers["Location"] == f"/v1/notifications/{body['id']}"
    assert response.headers["X-Correlation-Id"] == "corr-123"
    assert body["status"] == "queued"
    assert body["channel"] == "email"
    assert body["to"] == "someone@example.com"
    assert body["correlation_id"] == "corr-123"
    datetime.fromisoformat(body["created_at"])

    row = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", uuid.UUID(body["id"]))
    assert row is not None
    assert row["status"] == "queued"
    assert row["recipient"] == "someone@example.com"
    assert row["content"]["subject"] == "Hello"
    assert row["metadata"] == {"order": 42}
    assert row["correlation_id"] == "corr-123"

    [message] = await work_queue.take(1)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers[Headers.ATTEMPT] == 1
    assert message.headers[Headers.FIRST_ATTEMPT] == 1
    assert str(message.headers[Headers.TRACEPARENT]).startswith("00-0af7651916cd43dd")
    assert message.correlation_id == "corr-123"
    assert message.message_id == body["id"]
    delivery = parse_delivery(message.body, "email")
    assert isinstance(delivery, EmailDelivery)
    assert str(delivery.id) == body["id"]
    assert delivery.to == "someone@example.com"
    assert delivery.content.subject == "Hello"
    assert delivery.metadata == {"order": 42}
    assert delivery.correlation_id == "corr-123"
    assert await outbox_drained(pool) == 0


async def test_correlation_id_is_made_up_when_absent(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    response = await client.post("/v1/notifications", json=email())
    assert response.status == 202
    correlation_id = response.headers["X-Correlation-Id"]
    assert len(correlation_id) == 32
    body = await response.json()
    stored = await pool.fetchval(
        "SELECT correlation_id FROM notifications WHERE id = $1", uuid.UUID(body["id"])
    )
    assert stored == correlation_id
    # Every response carries one, errors too.
    missing = await client.get(f"/v1/notifications/{uuid.uuid4()}")
    assert missing.headers["X-Correlation-Id"]


async def test_idempotency_key_replays_and_conflicts(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    headers = {"Idempotency-Key": "order-42-shipped"}
    first = await client.post("/v1/notifications", json=email(), headers=headers)
    assert first.status == 202
    second = await client.post("/v1/notifications", json=email(), headers=headers)
    assert second.status == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    first_body, second_body = await first.json(), await second.json()
    assert second_body["id"] == first_body["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert await count(pool, "notifications") == 1
    await work_queue.take(1)
    assert await work_queue.depth() == 0
    assert await outbox_drained(pool) == 0

    changed = await client.post(
        "/v1/notifications", json=email(to="someone.else@example.com"), headers=headers
    )
    assert changed.status == 409
    assert changed.content_type == "application/problem+json"
    assert await count(pool, "notifications") == 1
    assert await work_queue.depth() == 0


async def test_concurrent_requests_with_one_key_make_one_notification(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    headers = {"Idempotency-Key": "racing"}
    responses = await asyncio.gather(
        *(client.post("/v1/notifications", json=email(), headers=headers) for _ in range(8))
    )
    assert sorted(r.status for r in responses) == [200] * 7 + [202]
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    assert await count(pool, "notifications") == 1
    await work_queue.take(1)
    assert await work_queue.depth() == 0


async def test_concurrent_single_posts_are_all_published(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/notifications", json=email()) for _ in range(50))
    )
    assert {r.status for r in responses} == {202}
    messages = await work_queue.take(50)
    assert {m.message_id for m in messages} == {(await r.json())["id"] for r in responses}
    assert await outbox_drained(pool) == 0


async def test_batch_accepts_in_order_and_publishes_all(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    items = [email(to=f"user{i}@example.com", metadata={"i": i}) for i in range(500)]
    response = await client.post("/v1/notifications/batch", json={"notifications": items})
    assert response.status == 202
    accepted = (await response.json())["notifications"]
    assert [a["to"] for a in accepted] == [f"user{i}@example.com" for i in range(500)]
    assert {a["status"] for a in accepted} == {"queued"}
    assert len({a["id"] for a in accepted}) == 500
    assert await count(pool, "notifications") == 500
    stored = await pool.fetch("SELECT id, recipient, metadata FROM notifications")
    by_id = {str(r["id"]): r for r in stored}
    for i, a in enumerate(accepted):
        assert by_id[a["id"]]["recipient"] == f"user{i}@example.com"
        assert by_id[a["id"]]["metadata"] == {"i": i}

    messages = await work_queue.take(500)
    assert {m.message_id for m in messages} == {a["id"] for a in accepted}
    for message in messages:
        assert message.headers[Headers.ATTEMPT] == 1
        parse_delivery(message.body, "email")
    assert await outbox_drained(pool) == 0


async def test_batch_with_bad_items_is_rejected_whole(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    items = [email() for _ in range(5)]
    items[1]["to"] = "not-an-address"
    items[3] = {**email(), "content": {"subject": "no body"}}
    items[4]["surprise"] = True
    response = await client.post("/v1/notifications/batch", json={"notifications": items})
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    fields = [e["field"] for e in problem["errors"]]
    assert fields == [
        "notifications[1].to",
        "notifications[3].content",
        "notifications[4].surprise",
    ]
    assert "text or html" in problem["errors"][1]["reason"]
    assert await count(pool, "notifications") == 0
    assert await outbox_drained(pool) == 0
    assert await work_queue.depth() == 0


async def test_batch_size_limits(make_client: Any, pool: asyncpg.Pool[Any]) -> None:
    client: Client = await make_client(api_max_batch=3)
    empty = await client.post("/v1/notifications/batch", json={"notifications": []})
    assert empty.status == 422
    too_many = await client.post(
        "/v1/notifications/batch", json={"notifications": [email() for _ in range(4)]}
    )
    assert too_many.status == 422
    assert (await too_many.json())["errors"][0]["field"] == "notifications"
    assert await count(pool, "notifications") == 0


async def test_get_shows_attempts_and_dead_letters(client: Client, pool: asyncpg.Pool[Any]) -> None:
    created = await (await client.post("/v1/notifications", json=email())).json()
    id = uuid.UUID(created["id"])
    started = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    await pool.executemany(
        """INSERT INTO attempts (notification_id, attempt, provider, started_at, finished_at,
               result, error, provider_message_id, possible_duplicate, lease_expires_at)
           VALUES ($1, $2, 'smtp', $3, $4, $5, $6, NULL, $7, $3)""",
        [
            (id, 1, started, started + timedelta(seconds=1), "transient_failure", "421", False),
            (id, 2, started + timedelta(minutes=1), None, None, None, True),
        ],
    )
    await pool.execute(
        "UPDATE notifications SET status = 'retrying', attempts = 2, last_error = '421'"
        " WHERE id = $1",
        id,
    )
    response = await client.get(f"/v1/notifications/{id}")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == str(id)
    assert body["status"] == "retrying"
    assert body["attempt_count"] == 2
    assert body["last_error"] == "421"
    assert body["content"]["subject"] == "Hello"
    assert body["dead_letters"] == []
    first, second = body["attempts"]
    assert first["attempt"] == 1
    assert first["provider"] == "smtp"
    assert first["result"] == "transient_failure"
    assert first["error"] == "421"
    assert datetime.fromisoformat(first["started_at"]) == started
    assert second["finished_at"] is None
    assert second["possible_duplicate"] is True


async def test_list_pages_newest_first_with_filters(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    ids = []
    for i in range(5):
        response = await client.post("/v1/notifications", json=email(metadata={"i": i}))
        ids.append((await response.json())["id"])
    await pool.execute(
        "UPDATE notifications SET status = 'sent' WHERE id = ANY($1::uuid[])", [ids[0], ids[3]]
    )

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/notifications", params=params)
        assert response.status == 200
        page = await response.json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))

    sent = await (await client.get("/v1/notifications", params={"status": "sent"})).json()
    assert [item["id"] for item in sent["items"]] == [ids[3], ids[0]]
    assert sent["next_cursor"] is None
    queued = await client.get("/v1/notifications", params={"status": "queued", "channel": "email"})
    assert len((await queued.json())["items"]) == 3

    for params in (
        {"status": "bogus"},
        {"channel": "pigeon"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "many"},
        {"cursor": "not-a-cursor"},
    ):
        bad = await client.get("/v1/notifications", params=params)
        assert bad.status == 422, params
        assert bad.content_type == "application/problem+json"
