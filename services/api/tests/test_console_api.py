"""The API the web console reads: the key's own view (``/v1/me``), last-hour figures
(``/v1/stats``), the notification search, dead letters by group with a bulk discard, and the
breakers and outbox lag in ``/v1/queues``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import asyncpg

from herald_api.stats import TALLY
from services.api.tests.support import Client, ClientFactory, bearer, dead_letter, email, new_key


async def _post(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/notifications", json=body)
    payload: dict[str, Any] = await response.json()
    assert response.status == 202, payload
    return payload


async def test_me_names_the_key_its_project_and_scopes(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    response = await client.get("/v1/me")
    assert response.status == 200
    me = await response.json()
    assert (me["project"], me["scopes"]) == ("default", ["send", "read", "admin"])
    id, secret = await new_key(pool, "send", project="shop")
    response = await client.get("/v1/me", headers=bearer(secret))
    assert response.status == 200
    assert await response.json() == {
        "id": str(id),
        "name": "test",
        "project": "shop",
        "scopes": ["send"],
    }
    assert (await client.get("/v1/me", headers=bearer("hrld_" + "x" * 43))).status == 401


async def test_stats_count_what_was_accepted_by_project_channel_and_lane(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    _, shop = await new_key(pool, "send", "read", project="shop")
    await _post(client, email())
    await _post(client, email(priority="high"))
    await _post(client, {"channel": "sms", "to": "+14155550123", "content": {"text": "Hi"}})
    response = await client.post(
        "/v1/notifications/batch",
        json={"notifications": [email(), email(priority="low")]},
        headers=bearer(shop),
    )
    assert response.status == 202, await response.json()
    await client.app[TALLY].flush()

    everyone = await (await client.get("/v1/stats")).json()
    assert everyone["window_seconds"] == 3600
    assert everyone["project"] is None
    by_channel = {c["channel"]: c for c in everyone["channels"]}
    assert set(by_channel) == {"email", "sms", "push"}
    assert (by_channel["email"]["accepted"], by_channel["sms"]["accepted"]) == (4, 1)
    assert by_channel["push"]["accepted"] == 0
    lanes = {lane["lane"]: lane["accepted"] for lane in by_channel["email"]["lanes"]}
    assert lanes == {"high": 1, "normal": 2, "low": 1}

    # A key that is not admin sees its own project's figures, and may not ask for another's.
    own = await (await client.get("/v1/stats", headers=bearer(shop))).json()
    assert own["project"] == "shop"
    assert [c["accepted"] for c in own["channels"]] == [2, 0, 0]
    refused = await client.get("/v1/stats?project=default", headers=bearer(shop))
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    one = await (await client.get("/v1/stats?project=default")).json()
    assert [c["accepted"] for c in one["channels"]] == [2, 1, 0]
    bad = await client.get("/v1/stats?project=Not%20A%20Project")
    assert bad.status == 422


async def test_the_notification_search_filters_by_recipient_campaign_and_time(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    alice = await _post(client, email(to="alice@example.com"))
    bob = [await _post(client, email(to="bob@example.com")) for _ in range(2)]
    campaign = uuid.uuid4()
    await pool.execute(
        "UPDATE notifications SET campaign_id = $1 WHERE id = $2", campaign, uuid.UUID(bob[0]["id"])
    )
    # Alice's is a day older than the others.
    await pool.execute(
        "UPDATE notifications SET created_at = created_at - interval '1 day' WHERE id = $1",
        uuid.UUID(alice["id"]),
    )

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/v1/notifications?{query}")
        body = await response.json()
        assert response.status == 200, body
        return [item["id"] for item in body["items"]]

    assert await ids("to=alice@example.com") == [alice["id"]]
    assert await ids("to=bob@example.com") == [bob[1]["id"], bob[0]["id"]]
    assert await ids("to=nobody@example.com") == []
    assert await ids(f"campaign={campaign}") == [bob[0]["id"]]
    assert await ids(f"campaign={campaign}&status=queued") == [bob[0]["id"]]
    cut = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await ids(f"created_before={cut}") == [alice["id"]]
    assert set(await ids(f"created_after={cut}")) == {b["id"] for b in bob}
    assert await ids(f"created_after={cut}&to=alice@example.com") == []
    # Paged with a cursor through a filter.
    first = await (await client.get("/v1/notifications?to=bob@example.com&limit=1")).json()
    rest = await client.get(
        f"/v1/notifications?to=bob@example.com&limit=1&cursor={first['next_cursor']}"
    )
    assert [i["id"] for i in (await rest.json())["items"]] == [bob[0]["id"]]

    for query, field in (
        ("campaign=not-a-uuid", "campaign"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-01-01T00:00:00", "created_before"),  # no offset
        ("to=a%00b", "to"),
    ):
        response = await client.get(f"/v1/notifications?{query}")
        assert response.status == 422, query
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert [e["field"] for e in problem["errors"]] == [field], query


async def test_dead_letters_grouped_and_discarded_in_bulk(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(api_max_redrive=2)
    _, shop = await new_key(pool, "send", project="shop")
    exhausted = [await dead_letter(pool, uuid.UUID((await _post(client, email()))["id"]))
                 for _ in range(3)]  # fmt: skip
    shop_notification = await client.post("/v1/notifications", json=email(), headers=bearer(shop))
    shop_letter = await dead_letter(
        pool, uuid.UUID((await shop_notification.json())["id"]), reason="permanent_failure"
    )
    malformed = await dead_letter(pool, None, reason="malformed", attempts=1, channel="sms")

    groups = await (await client.get("/v1/dead-letters/groups")).json()
    as_of = groups.pop("as_of")
    assert groups == {
        "groups": [
            {"channel": "email", "reason": "exhausted", "count": 3, "malformed": False},
            {"channel": "email", "reason": "permanent_failure", "count": 1, "malformed": False},
            {"channel": "sms", "reason": "malformed", "count": 1, "malformed": True},
        ],
        "capped": False,
    }
    shop_groups = await (await client.get("/v1/dead-letters/groups?project=shop")).json()
    assert shop_groups["groups"] == [
        {"channel": "email", "reason": "permanent_failure", "count": 1, "malformed": False}
    ]
    # A dead letter that comes after the count is not acted on with the count's instant as bound.
    late = await dead_letter(pool, uuid.UUID((await _post(client, email()))["id"]))
    response = await client.post(
        "/v1/dead-letters/discard", json={"reason": "exhausted", "until": as_of, "limit": 1}
    )
    assert response.status == 422  # no such field: a typo changes nothing
    exhausted_filter = {"channel": "email", "reason": "exhausted", "until": as_of}
    # Admin only, as every dead-letter route.
    assert (await client.get("/v1/dead-letters/groups", headers=bearer(shop))).status == 403

    # The whole "exhausted" group, two per request, following the cursor.
    discarded: list[str] = []
    cursor = None
    for _ in range(5):
        response = await client.post(
            "/v1/dead-letters/discard",
            json={**exhausted_filter, **({"cursor": cursor} if cursor else {})},
        )
        body = await response.json()
        assert response.status == 200, body
        discarded += body["ids"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(discarded) == sorted(str(i) for i in exhausted)
    assert body["skipped"] == 0
    # The late one is open still; it goes by itself.
    response = await client.post("/v1/dead-letters/discard", json={"reason": "exhausted"})
    assert (await response.json())["ids"] == [str(late)]
    resolutions = await pool.fetch(
        "SELECT id, resolution FROM dead_letters WHERE resolved_at IS NOT NULL"
    )
    assert {r["id"]: r["resolution"] for r in resolutions} == dict.fromkeys(
        [*exhausted, late], "discarded"
    )
    # Audited, one entry per request, naming the filter and what it discarded.
    audit = await pool.fetch(
        "SELECT target, details FROM audit_log WHERE action = 'dead_letters.discard' ORDER BY at"
    )
    assert len(audit) == 3
    assert json.loads(audit[0]["target"]) == {**exhausted_filter, "until": ANY}
    assert sum(len(a["details"]["discarded"]) for a in audit) == 4
    # Nothing else was touched; a discard of the malformed group takes it too.
    after = await (await client.get("/v1/dead-letters/groups")).json()
    assert [(g["reason"], g["count"]) for g in after["groups"]] == [
        ("permanent_failure", 1),
        ("malformed", 1),
    ]
    # Only malformed ones, or only well-formed ones, when told.
    response = await client.post(
        "/v1/dead-letters/discard", json={"malformed": False, "channel": "sms"}
    )
    assert (await response.json())["ids"] == []
    response = await client.post("/v1/dead-letters/discard", json={"malformed": True})
    assert (await response.json())["ids"] == [str(malformed)]
    # A project's discard never takes another project's (nor a malformed message, which has none).
    response = await client.post("/v1/dead-letters/discard", json={"project": "default"})
    assert (await response.json())["discarded"] == 0
    response = await client.post("/v1/dead-letters/discard", json={"project": "shop"})
    assert (await response.json())["ids"] == [str(shop_letter)]
    # A bad filter changes nothing.
    response = await client.post("/v1/dead-letters/discard", json={"channel": 7})
    assert response.status == 422
    assert response.content_type == "application/problem+json"


async def test_queues_show_breakers_per_provider_and_the_outbox_lag(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    for instance, breakers in (
        ("a", {"smtp": "closed", "sendgrid": "open"}),
        ("b", {"smtp": "half_open", "sendgrid": "open"}),
        ("gone", {"smtp": "open"}),
    ):
        await pool.execute(
            """INSERT INTO channel_instances (instance, channel, breakers, seen_at)
               VALUES ($1, 'email', $2, CASE WHEN $1 = 'gone' THEN now() - interval '5 minutes'
                                             ELSE now() END)""",
            instance,
            breakers,
        )
    overview = await (await client.get("/v1/queues")).json()
    [email_channel] = [c for c in overview["channels"] if c["channel"] == "email"]
    assert email_channel["breakers"] == [
        {"provider": "sendgrid", "closed": 0, "half_open": 0, "open": 2},
        {"provider": "smtp", "closed": 1, "half_open": 1, "open": 0},
    ]
    assert overview["outbox"] == {"backlog": 0, "oldest_age_seconds": None}
    # Two rows due (one for 42 seconds), one not due yet: what the relay has still to publish.
    await pool.execute(
        """INSERT INTO outbox (routing_key, body, available_at)
           VALUES ('email.default', '\\x00', now() - interval '42 seconds'),
                  ('email.default', '\\x00', now()),
                  ('email.default', '\\x00', now() + interval '1 hour')"""
    )
    lag = (await (await client.get("/v1/queues")).json())["outbox"]
    assert lag["backlog"] == 2
    assert 42 <= lag["oldest_age_seconds"] < 60


async def test_recipients_are_searched_as_acceptance_stored_them(client: Client) -> None:
    """An address with its domain in capitals, a bare FCM token, and a push token too long for a
    B-tree entry (accepted, stored and found: the index is of its MD5)."""
    mixed = await _post(client, email(to="Mixed@Example.COM"))
    token = "t" * 3000
    push = await _post(
        client,
        {
            "channel": "push",
            "to": {"provider": "fcm", "token": token},
            "content": {"title": "Hi", "body": "There"},
        },
    )
    number = await _post(client, {"channel": "sms", "to": "+14155550123", "content": {"text": "x"}})

    async def found(to: str) -> list[str]:
        response = await client.get("/v1/notifications", params={"to": to})
        body = await response.json()
        assert response.status == 200, body
        return [item["id"] for item in body["items"]]

    assert await found("Mixed@Example.COM") == [mixed["id"]]
    assert await found("Mixed@example.com") == [mixed["id"]]
    assert await found(token) == [push["id"]]
    assert await found(json.dumps({"token": token, "provider": "fcm"})) == [push["id"]]
    assert await found("+14155550123") == [number["id"]]
    assert await found("nobody@example.com") == []
    assert await found("{not json") == []
