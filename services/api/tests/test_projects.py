"""Everything a key creates belongs to its project: reads, lists, idempotency, dead letters."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.api.tests.support import (
    Client,
    ClientFactory,
    WorkQueue,
    bearer,
    count,
    dead_letter,
    email,
    new_key,
)


async def _create(client: Client, secret: str, **headers: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/v1/notifications", json=email(), headers={**bearer(secret), **headers}
    )
    return response.status, await response.json()


async def test_a_key_sees_only_its_own_projects_notifications(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    _, alpha = await new_key(pool, "send", "read", project="alpha")
    _, beta = await new_key(pool, "send", "read", project="beta")
    status, made_by_alpha = await _create(client, alpha)
    assert status == 202
    assert made_by_alpha["project"] == "alpha"
    status, made_by_beta = await _create(client, beta)
    assert status == 202
    assert made_by_beta["project"] == "beta"
    await work_queue.take(2)

    own = await client.get(f"/v1/notifications/{made_by_alpha['id']}", headers=bearer(alpha))
    assert own.status == 200
    assert (await own.json())["project"] == "alpha"
    # Another project's notification is as absent as one that does not exist.
    other = await client.get(f"/v1/notifications/{made_by_alpha['id']}", headers=bearer(beta))
    assert other.status == 404
    assert (await other.json())["detail"] == f"no notification with id {made_by_alpha['id']}"

    async def listed(secret: str | None = None, query: str = "") -> list[str]:
        headers = bearer(secret) if secret else {}
        response = await client.get(f"/v1/notifications{query}", headers=headers)
        assert response.status == 200, await response.text()
        return [n["id"] for n in (await response.json())["items"]]

    assert await listed(alpha) == [made_by_alpha["id"]]
    assert await listed(beta) == [made_by_beta["id"]]
    assert await listed(alpha, "?project=alpha") == [made_by_alpha["id"]]
    forbidden = await client.get("/v1/notifications?project=beta", headers=bearer(alpha))
    assert forbidden.status == 403
    # The client's own key is admin: every project, or the one named.
    assert set(await listed()) == {made_by_alpha["id"], made_by_beta["id"]}
    assert await listed(query="?project=beta") == [made_by_beta["id"]]
    assert await listed(query="?project=nobody") == []
    admin_view = await client.get(f"/v1/notifications/{made_by_beta['id']}")
    assert admin_view.status == 200


async def test_idempotency_keys_are_per_project(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    _, alpha = await new_key(pool, "send", project="alpha")
    _, beta = await new_key(pool, "send", project="beta")
    key = {"Idempotency-Key": "order-42-shipped"}
    status_a, first_a = await _create(client, alpha, **key)
    status_b, first_b = await _create(client, beta, **key)
    assert (status_a, status_b) == (202, 202)
    assert first_a["id"] != first_b["id"]
    status, again_a = await _create(client, alpha, **key)
    assert status == 200
    assert again_a["id"] == first_a["id"]
    assert await count(pool, "notifications") == 2

    batch = {"notifications": [email(to=f"user{i}@example.com") for i in range(3)]}
    made = []
    for secret in (alpha, beta, alpha):
        response = await client.post(
            "/v1/notifications/batch", json=batch, headers={**bearer(secret), **key}
        )
        made.append((response.status, [n["id"] for n in (await response.json())["notifications"]]))
    assert [s for s, _ in made] == [202, 202, 200]
    assert made[0][1] == made[2][1]
    assert not set(made[0][1]) & set(made[1][1])
    assert await count(pool, "notification_batches") == 2
    assert await count(pool, "notifications") == 8
    await work_queue.take(8)


async def test_dead_letters_carry_their_notifications_project(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client()
    _, alpha = await new_key(pool, "send", "read", project="alpha")
    _, beta = await new_key(pool, "send", "read", project="beta")
    letters = {}
    notifications = {}
    for project, secret in (("alpha", alpha), ("beta", beta)):
        _, made = await _create(client, secret)
        notifications[project] = made["id"]
        letters[project] = str(await dead_letter(pool, uuid.UUID(made["id"])))
    malformed = str(await dead_letter(pool, None, reason="malformed"))

    # Dead letters are admin's: a key of the project cannot list them.
    assert (await client.get("/v1/dead-letters", headers=bearer(alpha))).status == 403
    listed = (await (await client.get("/v1/dead-letters")).json())["items"]
    assert {d["id"]: d["project"] for d in listed} == {
        letters["alpha"]: "alpha",
        letters["beta"]: "beta",
        malformed: None,
    }
    only_alpha = (await (await client.get("/v1/dead-letters?project=alpha")).json())["items"]
    assert [d["id"] for d in only_alpha] == [letters["alpha"]]
    got = await (await client.get(f"/v1/dead-letters/{letters['beta']}")).json()
    assert got["project"] == "beta"
    # The other project does not see alpha's notification, dead letters included.
    detail = await client.get(f"/v1/notifications/{notifications['alpha']}", headers=bearer(beta))
    assert detail.status == 404

    # A bulk redrive can be confined to one project.
    redriven = await client.post("/v1/dead-letters/redrive", json={"project": "alpha"})
    assert redriven.status == 200
    body = await redriven.json()
    assert body["ids"] == [letters["alpha"]]
    assert body["notification_ids"] == [notifications["alpha"]]
    still_open = (await (await client.get("/v1/dead-letters")).json())["items"]
    assert {d["id"] for d in still_open} == {letters["beta"], malformed}
