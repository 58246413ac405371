"""A notification retention has redacted: shown without its recipient and content, and not
redriven (there is nothing left to send)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.api.tests.support import Client, dead_letter, email


async def _redacted_failure(client: Client, pool: asyncpg.Pool[Any]) -> tuple[uuid.UUID, Any]:
    response = await client.post("/v1/notifications", json=email())
    assert response.status == 202
    id = uuid.UUID((await response.json())["id"])
    await pool.execute(
        """UPDATE notifications SET status = 'failed', failure_reason = 'permanent_failure',
               recipient = '', content = '{}'::jsonb, redacted_at = now()
           WHERE id = $1""",
        id,
    )
    return id, await dead_letter(pool, id)


async def test_a_redacted_notification_shows_no_recipient_or_content(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    id, _ = await _redacted_failure(client, pool)
    body = await (await client.get(f"/v1/notifications/{id}")).json()
    assert body["to"] is None
    assert body["content"] == {}
    assert body["redacted_at"] is not None
    assert body["status"] == "failed"
    listed = await (await client.get("/v1/notifications", params={"status": "failed"})).json()
    assert [(i["id"], i["to"]) for i in listed["items"]] == [(str(id), None)]


async def test_a_redacted_notification_is_not_redriven(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    id, letter = await _redacted_failure(client, pool)
    response = await client.post(f"/v1/dead-letters/{letter}/redrive")
    assert response.status == 409
    assert "redacted" in (await response.json())["detail"]
    assert await pool.fetchval("SELECT status FROM notifications WHERE id = $1", id) == "failed"
    bulk = await client.post("/v1/dead-letters/redrive", json={"channel": "email"})
    assert bulk.status == 200, await bulk.text()
    result = await bulk.json()
    assert result["redriven"] == 0
    assert result["skipped_ids"] == [str(letter)]
    assert await pool.fetchval("SELECT status FROM notifications WHERE id = $1", id) == "failed"


async def test_replaying_the_key_of_a_redacted_push_notification_is_not_a_5xx(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    body = {
        "channel": "push",
        "to": {"provider": "fcm", "token": "t" * 40},
        "content": {"title": "Hi", "body": "There"},
    }
    headers = {"Idempotency-Key": "redacted-replay"}
    first = await client.post("/v1/notifications", json=body, headers=headers)
    assert first.status == 202, await first.text()
    id = (await first.json())["id"]
    await pool.execute(
        """UPDATE notifications SET status = 'sent', recipient = '', content = '{}'::jsonb,
               redacted_at = now() WHERE id = $1::uuid""",
        id,
    )
    again = await client.post("/v1/notifications", json=body, headers=headers)
    assert again.status == 200, await again.text()
    replayed = await again.json()
    assert (replayed["id"], replayed["to"]) == (id, None)
