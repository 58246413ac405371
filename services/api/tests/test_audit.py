"""The audit trail: every admin action, by whom, on what, when; listed newest first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg

from services.api.tests.support import Client, dead_letter, email, new_key


async def _notification(client: Client) -> uuid.UUID:
    response = await client.post("/v1/notifications", json=email())
    assert response.status == 202
    return uuid.UUID((await response.json())["id"])


async def test_every_admin_action_is_in_the_audit_trail(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    started = datetime.now(UTC)
    admin_id = await pool.fetchval("SELECT id FROM api_keys WHERE name = 'bootstrap'")
    redriven = await dead_letter(pool, await _notification(client))
    discarded = await dead_letter(pool, await _notification(client))
    bulk = await dead_letter(pool, await _notification(client), reason="rejected")

    assert (await client.post(f"/v1/dead-letters/{redriven}/redrive")).status == 200
    assert (await client.delete(f"/v1/dead-letters/{discarded}")).status == 200
    bulk_response = await client.post("/v1/dead-letters/redrive", json={"reason": "rejected"})
    assert (await bulk_response.json())["ids"] == [str(bulk)]
    created = await (await client.post("/v1/keys", json={"name": "k", "scopes": ["read"]})).json()
    assert (await client.delete(f"/v1/keys/{created['id']}")).status == 200
    # Refused actions change nothing and are not recorded as done.
    assert (await client.delete(f"/v1/dead-letters/{discarded}")).status == 409
    assert (await client.get("/v1/dead-letters")).status == 200  # reads are not audited

    response = await client.get("/v1/audit")
    assert response.status == 200
    everything = (await response.json())["items"]
    # The bootstrap key was made by the deployment's configuration, not a key: no key id.
    assert [(i["action"], i["target"], i["key_id"]) for i in everything[-1:]] == [
        ("key.create", str(admin_id), None)
    ]
    items = [i for i in everything if i["key_id"] is not None]
    assert [(i["action"], i["target"]) for i in items] == [
        ("key.revoke", created["id"]),
        ("key.create", created["id"]),
        ("dead_letters.redrive", '{"reason":"rejected"}'),
        ("dead_letter.discard", str(discarded)),
        ("dead_letter.redrive", str(redriven)),
    ]
    for item in items:
        assert item["key_id"] == str(admin_id)
        assert item["project"] == "default"
        at = datetime.fromisoformat(item["at"])
        assert started - timedelta(seconds=1) <= at <= datetime.now(UTC)
    assert items[2]["details"] == {"redriven": [str(bulk)], "skipped": []}
    assert items[1]["details"] == {"name": "k", "project": "default", "scopes": ["read"]}


async def test_the_audit_trail_filters_and_pages(client: Client, pool: asyncpg.Pool[Any]) -> None:
    ids = [
        (await (await client.post("/v1/keys", json={"name": f"k{i}", "scopes": ["read"]})).json())[
            "id"
        ]
        for i in range(5)
    ]
    await client.delete(f"/v1/keys/{ids[0]}")

    async def page(query: str) -> dict[str, Any]:
        response = await client.get(f"/v1/audit{query}")
        assert response.status == 200, await response.text()
        body = dict(await response.json())
        # Leave out what the configuration did (the bootstrap key, no key id): keys' actions only.
        body["items"] = [i for i in body["items"] if i["key_id"] is not None]
        return body

    created = (await page("?action=key.create"))["items"]
    assert [i["target"] for i in created] == ids[::-1]
    assert [i["target"] for i in (await page("?action=key.revoke"))["items"]] == [ids[0]]

    seen: list[str] = []
    cursor = ""
    while True:
        body = await page(f"?action=key.create&limit=2{cursor}")
        seen += [i["target"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert seen == ids[::-1]

    middle = datetime.fromisoformat(created[2]["at"])
    since = quote(middle.isoformat())
    newer = [i["target"] for i in (await page(f"?action=key.create&since={since}"))["items"]]
    older = [i["target"] for i in (await page(f"?action=key.create&until={since}"))["items"]]
    assert newer == ids[2:][::-1]
    assert older == ids[:2][::-1]
    future = quote((datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert (await page(f"?since={future}"))["items"] == []

    assert (await client.get("/v1/audit?action=nonsense")).status == 422
    assert (await client.get("/v1/audit?since=yesterday")).status == 422
    _, reader = await new_key(pool, "read", "send")
    refused = await client.get("/v1/audit", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status == 403
