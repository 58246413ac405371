from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from herald_common.schemas import EmailDelivery, Headers, parse_delivery
from services.api.tests.support import (
    Client,
    ClientFactory,
    WorkQueue,
    count,
    dead_letter,
    email,
    outbox_drained,
)


async def _notification(client: Client, **overrides: Any) -> uuid.UUID:
    response = await client.post("/v1/notifications", json=email(**overrides))
    assert response.status == 202
    return uuid.UUID((await response.json())["id"])


async def test_list_filter_and_get(client: Client, pool: asyncpg.Pool[Any]) -> None:
    ids = []
    for i, reason in enumerate(["exhausted", "rejected", "exhausted", "rejected", "exhausted"]):
        notification = await _notification(client)
        ids.append(
            await dead_letter(
                pool, notification, reason=reason, dead_lettered_at=f"2030-01-0{i + 1}T00:00Z"
            )
        )
    malformed = await dead_letter(pool, None, reason="malformed", dead_lettered_at="2030-01-09Z")
    await pool.execute(
        "UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded' WHERE id = $1",
        ids[0],
    )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/dead-letters", params=params)).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [str(malformed), *(str(i) for i in reversed(ids[1:]))]

    everything = await client.get("/v1/dead-letters", params={"include_resolved": "true"})
    assert len((await everything.json())["items"]) == 6
    rejected = await (await client.get("/v1/dead-letters", params={"reason": "rejected"})).json()
    assert [item["id"] for item in rejected["items"]] == [str(ids[3]), str(ids[1])]
    by_channel = await client.get("/v1/dead-letters", params={"channel": "sms"})
    assert (await by_channel.json())["items"] == []
    bad = await client.get("/v1/dead-letters", params={"include_resolved": "maybe"})
    assert bad.status == 422

    response = await client.get(f"/v1/dead-letters/{ids[1]}")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == str(ids[1])
    assert body["channel"] == "email"
    assert body["reason"] == "rejected"
    assert body["last_error"] == "smtp said no"
    assert body["attempts"] == 5
    assert body["resolved_at"] is None
    assert body["resolution"] is None
    assert body["notification_id"] is not None
    assert (await client.get(f"/v1/dead-letters/{uuid.uuid4()}")).status == 404
    assert (await client.get("/v1/dead-letters/nope")).status == 404

    notification = await (await client.get(f"/v1/notifications/{body['notification_id']}")).json()
    assert [d["id"] for d in notification["dead_letters"]] == [str(ids[1])]
    assert notification["status"] == "failed"


async def test_redrive_queues_again_with_a_fresh_budget(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    notification = await _notification(client, metadata={"k": "v"})
    await work_queue.take(1)
    id = await dead_letter(pool, notification, attempts=5)

    response = await client.post(f"/v1/dead-letters/{id}/redrive")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["resolution"] == "redriven"
    assert body["resolved_at"] is not None

    row = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", notification)
    assert row is not None
    assert row["status"] == "queued"
    assert row["failure_reason"] is None
    assert row["next_attempt_at"] is None

    [message] = await work_queue.take(1)
    assert message.headers[Headers.ATTEMPT] == 6
    assert message.headers[Headers.FIRST_ATTEMPT] == 6
    delivery = parse_delivery(message.body, "email")
    assert isinstance(delivery, EmailDelivery)
    assert delivery.id == notification
    assert delivery.metadata == {"k": "v"}
    assert delivery.content.subject == "Hello"
    assert await count(pool, "outbox") == 0

    again = await client.post(f"/v1/dead-letters/{id}/redrive")
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    assert (await client.post(f"/v1/dead-letters/{uuid.uuid4()}/redrive")).status == 404
    assert await work_queue.depth() == 0


async def test_a_malformed_message_cannot_be_redriven(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    id = await dead_letter(pool, None, reason="malformed")
    response = await client.post(f"/v1/dead-letters/{id}/redrive")
    assert response.status == 409
    assert (await response.json())["detail"] == "cannot redrive a malformed message"
    assert await pool.fetchval("SELECT resolved_at FROM dead_letters WHERE id = $1", id) is None
    assert await count(pool, "outbox") == 0
    assert await work_queue.depth() == 0


async def test_bulk_redrive_by_filter(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    exhausted, rejected = [], []
    for i in range(4):
        exhausted.append(
            await dead_letter(
                pool,
                await _notification(client),
                reason="exhausted",
                attempts=i + 1,
                dead_lettered_at=f"2030-01-0{i + 1}T00:00Z",
            )
        )
    for _ in range(2):
        rejected.append(await dead_letter(pool, await _notification(client), reason="rejected"))
    malformed = await dead_letter(pool, None, reason="exhausted")
    await work_queue.take(6)

    response = await client.post(
        "/v1/dead-letters/redrive",
        json={"reason": "exhausted", "since": "2030-01-02T00:00:00Z", "until": "2030-01-04T00:00Z"},
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["redriven"] == 2
    assert body["ids"] == [str(exhausted[1]), str(exhausted[2])]
    messages = await work_queue.take(2)
    assert sorted(int(str(m.headers[Headers.ATTEMPT])) for m in messages) == [3, 4]
    assert {m.message_id for m in messages} == set(body["notification_ids"])

    rest = await client.post("/v1/dead-letters/redrive", json={"channel": "email"})
    body = await rest.json()
    assert body["redriven"] == 4
    assert set(body["ids"]) == {str(i) for i in [exhausted[0], exhausted[3], *rejected]}
    await work_queue.take(4)
    assert (
        await pool.fetchval("SELECT resolved_at FROM dead_letters WHERE id = $1", malformed) is None
    )

    nothing = await client.post("/v1/dead-letters/redrive", json={})
    assert await nothing.json() == {
        "redriven": 0,
        "ids": [],
        "notification_ids": [],
        "skipped": 0,
        "skipped_ids": [],
        "next_cursor": None,
    }
    bad = await client.post("/v1/dead-letters/redrive", json={"since": "yesterday"})
    assert bad.status == 422
    naive = await client.post("/v1/dead-letters/redrive", json={"since": "2030-01-01T00:00:00"})
    assert naive.status == 422
    assert await count(pool, "outbox") == 0
    assert await work_queue.depth() == 0


async def test_discard(client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue) -> None:
    id = await dead_letter(pool, await _notification(client))
    await work_queue.take(1)
    response = await client.delete(f"/v1/dead-letters/{id}")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == str(id)
    assert body["resolution"] == "discarded"
    assert body["resolved_at"] is not None
    assert (await client.delete(f"/v1/dead-letters/{id}")).status == 409
    assert (await client.post(f"/v1/dead-letters/{id}/redrive")).status == 409
    assert (await client.delete(f"/v1/dead-letters/{uuid.uuid4()}")).status == 404
    listed = await (await client.get("/v1/dead-letters")).json()
    assert listed["items"] == []
    assert await work_queue.depth() == 0


async def test_redrive_starts_a_generation_after_every_known_attempt(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    notification = await _notification(client)
    await work_queue.take(1)
    id = await dead_letter(pool, notification, attempts=5)
    # Attempts 6 and 7 were started (their copies are somewhere) but never counted.
    await pool.executemany(
        """INSERT INTO attempts (notification_id, attempt, started_at, lease_expires_at)
           VALUES ($1, $2, now(), now())""",
        [(notification, attempt) for attempt in range(1, 8)],
    )

    response = await client.post(f"/v1/dead-letters/{id}/redrive")
    assert response.status == 200, await response.text()
    row = await pool.fetchrow(
        "SELECT status, attempts, first_attempt FROM notifications WHERE id = $1", notification
    )
    assert row is not None
    assert (row["status"], row["attempts"], row["first_attempt"]) == ("queued", 5, 8)
    [message] = await work_queue.take(1)
    assert message.headers[Headers.ATTEMPT] == 8
    assert message.headers[Headers.FIRST_ATTEMPT] == 8
    # Attempts that never finished may have reached the recipient: the redrive's attempt says so.
    assert message.headers[Headers.MAYBE_DELIVERED] == 1


async def test_a_notification_an_attempt_sent_or_still_holds_is_not_redriven(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    """Failed on record, but attempt 2 was sent (its outcome is on its way), or attempt 2 is still
    in flight under a live lease: a redrive would send it again, so it is refused (409) or, in
    bulk, skipped. A plain failure with finished attempts is redriven without the maybe flag."""
    sent, leased, plain = [await _notification(client) for _ in range(3)]
    await work_queue.take(3)
    letters = {n: await dead_letter(pool, n, attempts=2) for n in (sent, leased, plain)}
    await pool.executemany(
        """INSERT INTO attempts (notification_id, attempt, started_at, lease_expires_at,
                                 finished_at, result)
           VALUES ($1, $2, now(), now() + make_interval(secs => $3), $4, $5)""",
        [
            (sent, 1, 0, datetime.now(UTC), "transient_failure"),
            (sent, 2, 0, datetime.now(UTC), "sent"),
            (leased, 1, 0, datetime.now(UTC), "transient_failure"),
            (leased, 2, 30, None, None),
            (plain, 1, 0, datetime.now(UTC), "transient_failure"),
            (plain, 2, 0, datetime.now(UTC), "permanent_failure"),
        ],
    )
    for notification, why in ((sent, "was sent"), (leased, "still in flight")):
        response = await client.post(f"/v1/dead-letters/{letters[notification]}/redrive")
        assert response.status == 409
        assert why in (await response.json())["detail"]
    bulk = await (await client.post("/v1/dead-letters/redrive", json={})).json()
    assert bulk["notification_ids"] == [str(plain)]
    assert sorted(bulk["skipped_ids"]) == sorted(str(letters[n]) for n in (sent, leased))
    [message] = await work_queue.take(1)
    assert Headers.MAYBE_DELIVERED not in message.headers


async def test_only_a_failed_notification_is_redriven(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    notification = await _notification(client)
    await work_queue.take(1)
    id = await dead_letter(pool, notification)
    # A late success recorded after the dead letter: the notification was delivered after all.
    await pool.execute("UPDATE notifications SET status = 'sent' WHERE id = $1", notification)

    response = await client.post(f"/v1/dead-letters/{id}/redrive")
    assert response.status == 409
    assert response.content_type == "application/problem+json"
    assert "not failed" in (await response.json())["detail"]
    bulk = await (await client.post("/v1/dead-letters/redrive", json={})).json()
    assert (bulk["redriven"], bulk["skipped"], bulk["skipped_ids"]) == (0, 1, [str(id)])

    row = await pool.fetchrow(
        "SELECT status, first_attempt FROM notifications WHERE id = $1", notification
    )
    assert row is not None
    assert (row["status"], row["first_attempt"]) == ("sent", 1)
    assert await pool.fetchval("SELECT resolved_at FROM dead_letters WHERE id = $1", id) is None
    assert await count(pool, "outbox") == 0
    assert await work_queue.depth() == 0
    # What is left to do with it.
    assert (await client.delete(f"/v1/dead-letters/{id}")).status == 200


async def test_concurrent_redrives_of_one_dead_letter_queue_it_once(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    notification = await _notification(client)
    await work_queue.take(1)
    id = await dead_letter(pool, notification)
    responses = await asyncio.gather(
        *(client.post(f"/v1/dead-letters/{id}/redrive") for _ in range(4)),
        client.post("/v1/dead-letters/redrive", json={}),
    )
    single = sorted(r.status for r in responses[:4])
    bulk = await responses[4].json()
    assert single.count(200) + bulk["redriven"] == 1
    assert set(single) <= {200, 409}
    await work_queue.take(1)
    assert await outbox_drained(pool) == 0
    assert await work_queue.depth() == 0


async def test_bulk_redrive_is_bounded_and_goes_on_with_a_cursor(
    make_client: ClientFactory, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    client = await make_client(api_max_redrive=2)
    letters = []
    for day in range(1, 6):
        notification = await _notification(client)
        letters.append(
            await dead_letter(pool, notification, dead_lettered_at=f"2030-01-0{day}T00:00Z")
        )
        if day == 2:
            await pool.execute(
                "UPDATE notifications SET status = 'sent' WHERE id = $1", notification
            )
    await work_queue.take(5)

    redriven: list[str] = []
    skipped: list[str] = []
    cursor = None
    requests = 0
    while True:
        body = await (
            await client.post("/v1/dead-letters/redrive", json={"cursor": cursor} if cursor else {})
        ).json()
        requests += 1
        assert body["redriven"] + body["skipped"] <= 2
        redriven += body["ids"]
        skipped += body["skipped_ids"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert requests == 3
    assert redriven == [str(letters[i]) for i in (0, 2, 3, 4)]
    assert skipped == [str(letters[1])]
    await work_queue.take(4)
    assert await outbox_drained(pool) == 0
    bad = await client.post("/v1/dead-letters/redrive", json={"cursor": "not-a-cursor"})
    assert bad.status == 422


async def test_a_redrive_numbers_past_a_dead_letter_that_was_never_claimed(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    """Retry 3 was dead-lettered by the broker before anyone claimed it (no attempt row, the
    count still 2): the new generation starts at 4, so its own dead letter is not taken for a
    repeat of this one."""
    notification = await _notification(client)
    await work_queue.take(1)
    id = await dead_letter(pool, notification, attempts=3, reason="delivery_limit")
    await pool.execute("UPDATE notifications SET attempts = 2 WHERE id = $1", notification)
    assert (await client.post(f"/v1/dead-letters/{id}/redrive")).status == 200
    [message] = await work_queue.take(1)
    assert message.headers[Headers.FIRST_ATTEMPT] == 4


async def test_instants_out_of_range_are_a_422_not_a_500(client: Client) -> None:
    edge = "9999-12-31T23:59:59-05:00"
    cursor = base64.urlsafe_b64encode(f"{edge}|{uuid.uuid4()}".encode()).decode()
    for response in (
        await client.get("/v1/dead-letters", params={"cursor": cursor}),
        await client.get("/v1/notifications", params={"cursor": cursor}),
        await client.post("/v1/dead-letters/redrive", json={"since": edge}),
        await client.post("/v1/dead-letters/redrive", json={"until": "0001-01-01T00:00:00+05:00"}),
    ):
        assert response.status == 422, await response.text()
        assert response.content_type == "application/problem+json"
