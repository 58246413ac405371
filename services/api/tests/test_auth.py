"""API keys at the door: 401, 403 and 429 on every ``/v1`` route, revocation, the bootstrap key."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any

import asyncpg
import pytest

from herald_api.keys import secret_hash
from herald_api.models import SCOPES
from herald_api.openapi import required_scopes
from herald_api.settings import ApiSettings
from services.api.tests.support import (
    ADMIN_SECRET,
    Client,
    ClientFactory,
    bearer,
    email,
    new_key,
)

OPEN_PATHS = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/console",
    "/docs/swagger-ui.css",
    "/console/console.js",
]
OPEN_ROUTES = {*OPEN_PATHS[:-2], "/docs/{asset}", "/console/{asset}"}
"""The documented paths of those (a documentation file by its route template)."""


def _v1_routes(client: Client) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route the app serves, ids filled in: from the router itself,
    so that a route added later is tried too."""
    routes = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical.startswith("/v1/")
    }
    assert routes, "no /v1 routes?"
    return sorted((m, _filled(p)) for m, p in routes)


_EXAMPLES = {"{channel}": "email", "{name}": "welcome"}
"""Values for the path parameters other than ids, that the route template is told back from."""


def _filled(template: str) -> str:
    path = template.replace("{id}", str(uuid.uuid4()))
    for parameter, value in _EXAMPLES.items():
        path = path.replace(parameter, value)
    return path


def _template(path: str) -> str:
    parts = path.split("/")
    names = {value: parameter for parameter, value in _EXAMPLES.items()}
    return "/".join(
        "{id}" if len(p) == 36 and p.count("-") == 4 else names.get(p, p) for p in parts
    )


async def _assert_refused(client: Client, method: str, path: str, status: int, **kw: Any) -> None:
    response = await client.request(method, path, **kw)
    assert response.status == status, (method, path, await response.text())
    assert response.content_type == "application/problem+json", (method, path)
    body = await response.json()
    assert body["status"] == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer", (method, path)


async def test_every_v1_route_needs_a_key_with_its_scope(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(secret=None)
    revoked_id, revoked = await new_key(pool)
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", revoked_id)
    # For each scope, a key with every other scope: it must get a 403 where that scope is needed.
    lacking = {
        scope: (await new_key(pool, *(s for s in SCOPES if s != scope)))[1] for scope in SCOPES
    }
    scopes = required_scopes()
    for method, path in _v1_routes(client):
        # Every route of the table names its scope: none is open by omission.
        scope = scopes[(method, _template(path))]
        await _assert_refused(client, method, path, 401)
        await _assert_refused(client, method, path, 401, headers={"Authorization": "Bearer"})
        await _assert_refused(client, method, path, 401, headers={"Authorization": ADMIN_SECRET})
        await _assert_refused(client, method, path, 401, headers=bearer("hrld_" + "x" * 43))
        await _assert_refused(client, method, path, 401, headers=bearer(revoked))
        if scope:
            await _assert_refused(client, method, path, 403, headers=bearer(lacking[scope]))
        else:  # any valid key (GET /v1/me): even one with a single scope
            for key in lacking.values():
                response = await client.request(method, path, headers=bearer(key))
                assert response.status == 200, (method, path)
        # With the scope, the key gets past the door (whatever the request then makes of it).
        response = await client.request(method, path, headers=bearer(ADMIN_SECRET))
        assert response.status not in (401, 403), (method, path)
    # An unknown /v1 path needs a key too: who is not let in does not learn what exists.
    await _assert_refused(client, "GET", "/v1/nothing-here", 401)
    response = await client.get("/v1/nothing-here", headers=bearer(ADMIN_SECRET))
    assert response.status == 404


async def test_ops_routes_and_the_document_need_no_key(make_client: ClientFactory) -> None:
    client = await make_client(secret=None)
    for path in OPEN_PATHS:
        assert (await client.get(path)).status == 200, path
    document = await (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in OPEN_ROUTES:
                assert "security" not in operation
                continue
            (requirement,) = operation["security"]
            assert list(requirement) == ["bearer"]
            # An empty list: any valid key (GET /v1/me).
            assert requirement["bearer"] == [] or requirement["bearer"][0] in SCOPES
            assert requirement["bearer"] != [] or (method, path) == ("get", "/v1/me")
            responses = operation["responses"]
            assert {"401", "403", "429"} <= set(responses), (method, path)
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
            assert responses["429"]["headers"]["Retry-After"]["required"] is True


async def test_a_revoked_key_stops_working_on_every_replica_within_5_seconds(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    first, second = await make_client(), await make_client()
    key_id, secret = await new_key(pool, "read")
    for replica in (first, second):  # both have it cached as valid now
        assert (await replica.get("/v1/notifications", headers=bearer(secret))).status == 200

    revoked_at = time.monotonic()
    response = await first.delete(f"/v1/keys/{key_id}")
    assert response.status == 200
    assert (await response.json())["revoked_at"] is not None
    # At once on the replica that revoked it, within the cache's time on the other.
    assert (await first.get("/v1/notifications", headers=bearer(secret))).status == 401
    while (await second.get("/v1/notifications", headers=bearer(secret))).status == 200:
        assert time.monotonic() - revoked_at < 5.0, "still accepted after 5 s"
        await asyncio.sleep(0.1)
    assert (await second.get("/v1/notifications", headers=bearer(secret))).status == 401
    assert time.monotonic() - revoked_at < 5.0
    # Revoking again is a conflict; an unknown key is not found.
    assert (await first.delete(f"/v1/keys/{key_id}")).status == 409
    assert (await first.delete(f"/v1/keys/{uuid.uuid4()}")).status == 404


async def test_three_replicas_starting_together_make_one_bootstrap_key(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    secret = "hrld_compose-chosen-bootstrap-key-" + uuid.uuid4().hex
    replicas = await asyncio.gather(
        *(make_client(api_bootstrap_key=secret, secret=secret) for _ in range(3))
    )
    rows = await pool.fetch(
        "SELECT project, scopes, revoked_at FROM api_keys WHERE secret_hash = $1",
        secret_hash(secret),
    )
    assert [(r["project"], sorted(r["scopes"]), r["revoked_at"]) for r in rows] == [
        ("default", ["admin", "read", "send"], None)
    ]
    for replica in replicas:
        assert (await replica.post("/v1/notifications", json=email())).status == 202
        assert (await replica.get("/v1/notifications")).status == 200
        assert (await replica.get("/v1/keys")).status == 200
    # A restart finds it there and leaves it alone.
    await make_client(api_bootstrap_key=secret)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM api_keys WHERE secret_hash = $1", secret_hash(secret)
        )
        == 1
    )


async def test_over_its_rate_limit_a_key_gets_429_with_retry_after(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(api_key_rate_limit=1)
    _, own_rate = await new_key(pool, "read", rate_limit=2)  # bursts of 4
    _, default_rate = await new_key(pool, "read")  # HERALD_API_KEY_RATE_LIMIT: 1/s, bursts of 2
    _, unlimited = await new_key(pool, "read", rate_limit=0)

    async def statuses(secret: str, n: int) -> list[int]:
        return [
            (await client.get("/v1/notifications", headers=bearer(secret))).status for _ in range(n)
        ]

    own = await statuses(own_rate, 8)
    assert own[:4] == [200] * 4, own
    assert 429 in own[4:], own
    default = await statuses(default_rate, 5)
    assert default[:2] == [200] * 2, default
    assert 429 in default[2:], default
    assert await statuses(unlimited, 20) == [200] * 20

    refused = await client.get("/v1/notifications", headers=bearer(default_rate))
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    await asyncio.sleep(int(refused.headers["Retry-After"]))
    assert (await client.get("/v1/notifications", headers=bearer(default_rate))).status == 200


async def test_header_bytes_that_are_no_key_are_a_401_not_a_500(client: Client) -> None:
    """The HTTP parser lets any byte into a header; a secret that cannot be a key is refused
    before it is hashed or looked up."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"GET /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.split()[1] == b"401", status_line
    for weak in ("hrld_short", "Bearer", "hrld_" + "é" * 43, "x" * 31, "x" * 513):
        response = await client.get("/v1/notifications", headers=bearer(weak))
        assert response.status == 401


async def test_a_rotated_bootstrap_secret_revokes_the_previous_one(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    await make_client()  # the first deployment's bootstrap secret: ADMIN_SECRET
    rotated = "hrld_" + secrets.token_urlsafe(32)
    new = await make_client(secret=rotated, api_bootstrap_key=rotated)
    assert (await new.get("/v1/notifications")).status == 200
    old = await new.get("/v1/notifications", headers=bearer(ADMIN_SECRET))
    assert old.status == 401  # this replica forgot nothing: the old row is revoked
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY at")]
    assert actions.count("key.revoke") == 1


def test_a_short_bootstrap_secret_is_refused_without_echoing_it() -> None:
    for weak in ("changeme-changeme-changeme-3130", "changeme changeme changeme changeme"):
        with pytest.raises(ValueError, match="32 to 512 visible ASCII") as refused:
            ApiSettings(api_bootstrap_key=weak)
        assert "changeme" not in str(refused.value)


async def test_any_bootstrap_secret_of_32_characters_is_a_working_admin_key(
    make_client: ClientFactory,
) -> None:
    chosen = "compose-Chosen:secret/of+32.chars"[:32]
    client = await make_client(secret=chosen, api_bootstrap_key=chosen)
    assert (await client.get("/v1/keys")).status == 200
    assert (await client.get("/v1/keys", headers=bearer(chosen + "x"))).status == 401


async def test_a_project_filter_that_is_no_project_name_is_a_422(client: Client) -> None:
    response = await client.get(f"/v1/notifications/{uuid.uuid4()}", params={"project": "a\x00b"})
    assert response.status == 422


async def test_a_new_secret_is_never_cached(client: Client) -> None:
    response = await client.post(
        "/v1/keys", json={"name": "ops", "project": "default", "scopes": ["read"]}
    )
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
