"""A campaign's counts and status are read from its notifications: outcomes applied twice and
a redrive after the end leave them exact (they always add up to the recipients)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.api.tests.support import Client, dead_letter


async def _fanned_out(pool: asyncpg.Pool[Any], client: Client, recipients: int) -> str:
    """A campaign accepted through the API, fanned out as the dispatcher does (rows only)."""
    body = {
        "name": "counts",
        "channel": "sms",
        "template": "notice",
        "data": {"message": "hi"},
        "recipients": [{"to": f"+1415555{i:04d}"} for i in range(recipients)],
    }
    response = await client.post("/v1/campaigns", json=body)
    assert response.status == 202, await response.text()
    id = (await response.json())["id"]
    rows = await pool.fetch("SELECT row_number, recipient FROM campaign_recipients")
    for row in rows:
        notification = uuid.uuid4()
        await pool.execute(
            """INSERT INTO notifications (id, channel, recipient, content, status, campaign_id,
                   project)
               VALUES ($1, 'sms', $2, '{"text": "hi"}', 'queued', $3, 'default')""",
            notification,
            row["recipient"],
            uuid.UUID(id),
        )
        await pool.execute(
            """UPDATE campaign_recipients SET notification_id = $1
               WHERE campaign_id = $2 AND row_number = $3""",
            notification,
            uuid.UUID(id),
            row["row_number"],
        )
    await pool.execute(
        """UPDATE campaigns SET status = 'processing', fanned_out = recipients,
               started_at = now() - interval '10 s' WHERE id = $1""",
        uuid.UUID(id),
    )
    return str(id)


async def _counts(client: Client, id: str) -> tuple[str, dict[str, int]]:
    body = await (await client.get(f"/v1/campaigns/{id}")).json()
    assert sum(body["counts"].values()) == body["recipients"]
    return body["status"], body["counts"]


async def test_counts_follow_the_notifications_through_repeats_and_a_redrive(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    id = await _fanned_out(pool, client, 4)
    status, counts = await _counts(client, id)
    assert (status, counts["queued"], counts["pending"]) == ("processing", 4, 0)
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM notifications ORDER BY id")]
    # An outcome applied twice changes a status once: the counts cannot count it twice.
    for _ in range(2):
        await pool.execute(
            "UPDATE notifications SET status = 'sent' WHERE id = ANY($1::uuid[])", ids[:3]
        )
    status, counts = await _counts(client, id)
    assert (status, counts["sent"], counts["queued"]) == ("processing", 3, 1)
    dead = await dead_letter(pool, ids[3])
    status, counts = await _counts(client, id)
    assert (status, counts["sent"], counts["failed"]) == ("completed_with_failures", 3, 1)
    body = await (await client.get(f"/v1/campaigns/{id}")).json()
    assert body["estimated_finish_at"] is None
    assert body["throughput"] > 0
    failed = await (await client.get(f"/v1/campaigns/{id}/notifications?status=failed")).json()
    assert [n["id"] for n in failed["items"]] == [str(ids[3])]
    assert failed["items"][0]["campaign_id"] == id

    redriven = await client.post(f"/v1/dead-letters/{dead}/redrive")
    assert redriven.status == 200, await redriven.text()
    status, counts = await _counts(client, id)
    assert (status, counts["failed"], counts["queued"]) == ("processing", 0, 1)
    # Finished again only when the redriven one is.
    await pool.execute("UPDATE notifications SET status = 'sent' WHERE id = $1", ids[3])
    status, counts = await _counts(client, id)
    assert (status, counts["sent"]) == ("completed", 4)
    # Completed as shown: it cannot be canceled any more, whatever is stored yet.
    assert (await client.post(f"/v1/campaigns/{id}/cancel")).status == 409
