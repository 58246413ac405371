"""Scheduled sends (``send_at``) and cancellation (``DELETE /v1/notifications/{id}``) at the API:
what is stored, what is published now and what is left to the relay, and what cannot be canceled."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from herald_api.bodies import request_hash
from herald_api.models import EmailNotificationRequest
from services.api.tests.support import Client, WorkQueue, email, new_key, outbox_drained


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_a_notification_for_later_is_stored_scheduled_and_not_published(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    send_at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    response = await client.post(
        "/v1/notifications", json=email(send_at=send_at.isoformat().replace("+00:00", "+02:00"))
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["status"] == "scheduled"
    # Given in +02:00, meant as that instant: stored and shown as the same moment.
    meant = send_at - timedelta(hours=2)
    assert datetime.fromisoformat(body["send_at"]) == meant
    row = await pool.fetchrow(
        """SELECT n.status, n.send_at, o.available_at FROM notifications n
           JOIN outbox o ON o.notification_id = n.id WHERE n.id = $1""",
        uuid.UUID(body["id"]),
    )
    assert row is not None
    assert (row["status"], row["send_at"], row["available_at"]) == ("scheduled", meant, meant)

    # Published now: only the notification without a time.
    now = await client.post("/v1/notifications", json=email(to="now@example.com"))
    assert now.status == 202
    [message] = await work_queue.take(1)
    assert message.message_id == (await now.json())["id"]
    assert await outbox_drained(pool, timeout=2) == 1  # the scheduled row stays
    assert await work_queue.depth() == 0


async def test_a_time_in_the_past_means_now(client: Client, work_queue: WorkQueue) -> None:
    asked = _in(-3600)
    response = await client.post("/v1/notifications", json=email(send_at=asked))
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "queued"
    assert datetime.fromisoformat(body["send_at"]) == datetime.fromisoformat(asked)
    [message] = await work_queue.take(1)
    assert message.message_id == body["id"]


async def test_a_time_just_past_is_left_to_the_relay_and_its_clock(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    # Within the clock allowance: this host's clock may run ahead of PostgreSQL's, so the relay,
    # which reads PostgreSQL's, decides when it is due (at once, here).
    response = await client.post("/v1/notifications", json=email(send_at=_in(-5)))
    body = await response.json()
    assert body["status"] == "scheduled"
    row = await pool.fetchrow("SELECT available_at <= now() AS due FROM outbox")
    assert row is not None
    assert row["due"]
    assert await work_queue.depth() == 0  # not published by the API


@pytest.mark.parametrize(
    "send_at",
    ["2030-01-01T09:00:00", "2030-01-01", 1893488400, "tomorrow", "9999-12-31T23:59:59-05:00"],
)
async def test_a_send_at_that_is_no_rfc_3339_instant_is_a_422_naming_it(
    client: Client, pool: asyncpg.Pool[Any], send_at: object
) -> None:
    response = await client.post("/v1/notifications", json=email(send_at=send_at))
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == ["send_at"]
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 0


async def test_a_batch_mixes_now_and_later(client: Client, work_queue: WorkQueue) -> None:
    response = await client.post(
        "/v1/notifications/batch",
        json={"notifications": [email(), email(send_at=_in(600)), email()]},
    )
    assert response.status == 202, await response.text()
    statuses = [n["status"] for n in (await response.json())["notifications"]]
    assert statuses == ["queued", "scheduled", "queued"]
    assert len(await work_queue.take(2)) == 2
    assert await work_queue.depth() == 0


async def test_a_scheduled_notification_is_canceled_and_its_outbox_row_removed(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    created = await (await client.post("/v1/notifications", json=email(send_at=_in(600)))).json()
    response = await client.delete(f"/v1/notifications/{created['id']}")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["id"], body["status"]) == (created["id"], "canceled")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    again = await client.delete(f"/v1/notifications/{created['id']}")
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    assert "canceled" in (await again.json())["detail"]


async def test_a_queued_notification_is_canceled_but_one_being_sent_is_not(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    queued = await (await client.post("/v1/notifications", json=email())).json()
    await work_queue.take(1)
    assert (await client.delete(f"/v1/notifications/{queued['id']}")).status == 200
    for status in ("sending", "sent", "failed"):
        other = await (await client.post("/v1/notifications", json=email())).json()
        await pool.execute(
            "UPDATE notifications SET status = $2 WHERE id = $1", uuid.UUID(other["id"]), status
        )
        refused = await client.delete(f"/v1/notifications/{other['id']}")
        assert refused.status == 409, status
        stored = await pool.fetchval(
            "SELECT status FROM notifications WHERE id = $1", uuid.UUID(other["id"])
        )
        assert stored == status  # changed nothing


async def test_cancelling_another_projects_notification_or_none_is_a_404(
    client: Client, make_client: Any, pool: asyncpg.Pool[Any]
) -> None:
    created = await (await client.post("/v1/notifications", json=email(send_at=_in(600)))).json()
    _, secret = await new_key(pool, "send", "read", project="other")
    other = await make_client(secret=secret)
    assert (await other.delete(f"/v1/notifications/{created['id']}")).status == 404
    assert (await other.delete(f"/v1/notifications/{uuid.uuid4()}")).status == 404
    assert (await other.delete("/v1/notifications/not-an-id")).status == 404
    assert await pool.fetchval("SELECT status FROM notifications") == "scheduled"
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1  # rolled back with the 404


async def test_a_read_only_key_cannot_cancel(
    client: Client, make_client: Any, pool: asyncpg.Pool[Any]
) -> None:
    created = await (await client.post("/v1/notifications", json=email(send_at=_in(600)))).json()
    _, secret = await new_key(pool, "read")
    reader = await make_client(secret=secret)
    assert (await reader.delete(f"/v1/notifications/{created['id']}")).status == 403


def test_requests_without_send_at_hash_as_before_it_existed() -> None:
    # Pinned from the code before send_at was added: stored idempotency keys keep matching.
    request = EmailNotificationRequest.model_validate(email())
    assert request_hash(request) == (
        "2b5f1b6cbacfc97344a1932a6ae81323d5c627fdbd1cb1b3ef6101f94c4ecdb7"
    )
