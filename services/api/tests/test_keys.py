"""Managing keys over HTTP and with ``herald-keys``; secrets shown once, stored and logged never."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from typing import Any

import asyncpg
import pytest
import structlog

from herald_api.keys import SECRET_PREFIX, secret_hash
from services.api.tests.support import ADMIN_SECRET, Client, ClientFactory, bearer, email


async def _herald_keys(database_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_api.keys_cli",
        *args,
        env={**os.environ, "HERALD_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_keys_over_http(client: Client, pool: asyncpg.Pool[Any]) -> None:
    response = await client.post(
        "/v1/keys",
        json={"name": "billing", "project": "shop", "scopes": ["send"], "rate_limit": 50},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    secret = created["secret"]
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret) >= len(SECRET_PREFIX) + 43
    assert response.headers["Location"] == f"/v1/keys/{created['id']}"
    assert (created["project"], created["scopes"], created["rate_limit"]) == ("shop", ["send"], 50)
    stored = await pool.fetchval(
        "SELECT secret_hash FROM api_keys WHERE id = $1", uuid.UUID(created["id"])
    )
    assert bytes(stored) == secret_hash(secret)

    sent = await client.post("/v1/notifications", json=email(), headers=bearer(secret))
    assert sent.status == 202
    assert (await sent.json())["project"] == "shop"

    listed = (await (await client.get("/v1/keys")).json())["items"]
    assert [k["name"] for k in listed] == ["bootstrap", "billing"]
    assert all("secret" not in k for k in listed)

    invalid = await client.post("/v1/keys", json={"name": "x", "scopes": ["root"]})
    assert invalid.status == 422
    assert (await client.post("/v1/keys", json={"name": "x", "scopes": []})).status == 422
    bad_project = await client.post(
        "/v1/keys", json={"name": "x", "project": "A B", "scopes": ["read"]}
    )
    assert bad_project.status == 422

    revoked = await client.delete(f"/v1/keys/{created['id']}")
    assert revoked.status == 200
    assert (await revoked.json())["revoked_at"] is not None
    again = await client.post("/v1/notifications", json=email(), headers=bearer(secret))
    assert again.status == 401


async def test_herald_keys_create_list_revoke(
    make_client: ClientFactory, database_url: str, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(api_key_cache_ttl=1)
    code, out, err = await _herald_keys(
        database_url, "create", "--name", "ci", "--project", "ops", "--scope", "send",
        "--scope", "read", "--rate-limit", "10",
    )  # fmt: skip
    assert code == 0, err
    secret = out.rstrip("\n").splitlines()[-1]
    assert secret.startswith(SECRET_PREFIX)
    key_id = out.split()[0]
    sent = await client.post("/v1/notifications", json=email(), headers=bearer(secret))
    assert sent.status == 202
    assert (await sent.json())["project"] == "ops"

    code, out, err = await _herald_keys(database_url, "list")
    assert code == 0, err
    assert key_id in out
    assert "scopes=send,read" in out
    assert "ops" in out
    assert "bootstrap" in out
    assert secret not in out
    assert ADMIN_SECRET not in out

    code, out, err = await _herald_keys(database_url, "revoke", key_id)
    assert code == 0, err
    assert "revoked" in out
    # Revoked straight in the database: the API's cache lets it go within its TTL.
    await asyncio.sleep(1.1)
    assert (await client.get("/v1/notifications", headers=bearer(secret))).status == 401
    code, _, err = await _herald_keys(database_url, "revoke", key_id)
    assert code == 1
    assert "already revoked" in err
    code, _, err = await _herald_keys(database_url, "create", "--name", "x", "--scope", "root")
    assert code != 0

    trail = await pool.fetch(
        """SELECT key_id, action, target FROM audit_log
           WHERE target <> (SELECT id::text FROM api_keys WHERE bootstrap) ORDER BY at"""
    )
    assert [(r["key_id"], r["action"], r["target"]) for r in trail] == [
        (None, "key.create", key_id),
        (None, "key.revoke", key_id),
    ]


async def _columns_holding(pool: asyncpg.Pool[Any], text: str) -> list[str]:
    """Every text, bytea, json(b) or array column of every table that contains ``text``."""
    columns = await pool.fetch(
        """SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
             AND c.data_type IN ('text', 'character varying', 'bytea', 'json', 'jsonb',
                                 'ARRAY', 'USER-DEFINED')"""
    )
    assert {"api_keys", "audit_log", "notifications"} <= {c["table_name"] for c in columns}
    found = []
    for c in columns:
        table, column = c["table_name"], c["column_name"]
        needle: str | bytes = text
        condition = f'strpos("{column}"::text, $1::text) > 0'
        if c["data_type"] == "bytea":
            needle, condition = text.encode(), f'position($1::bytea IN "{column}") > 0'
        if await pool.fetchval(f'SELECT count(*) FROM "{table}" WHERE {condition}', needle):
            found.append(f"{table}.{column}")
    return found


async def test_secrets_are_in_no_log_line_and_no_column(
    make_client: ClientFactory, pool: asyncpg.Pool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logged:
        client = await make_client(api_key_rate_limit=5)
        created = await (
            await client.post("/v1/keys", json={"name": "leaky?", "scopes": ["send"]})
        ).json()
        secret = created["secret"]
        # Requests that log, succeed, fail and are refused, carrying the secrets every way.
        for headers in (
            bearer(secret),
            {"Authorization": secret},
            bearer(secret + "x"),
        ):
            await client.post("/v1/notifications", json=email(), headers=headers)
            await client.get("/v1/dead-letters", headers=headers)
            await client.get("/v1/nothing", headers=headers)
        for _ in range(12):  # past its rate limit
            await client.get("/v1/notifications", headers=bearer(secret))
        await client.post("/v1/dead-letters/redrive", json={})
        await client.delete(f"/v1/keys/{created['id']}")
        await client.post("/v1/notifications", json=email(), headers=bearer(secret))
    assert logged, "nothing was logged: the capture is not working"
    assert "api_keys.name" in await _columns_holding(pool, "leaky?"), "the scan finds nothing"
    for secret_text in (secret, secret.removeprefix(SECRET_PREFIX), ADMIN_SECRET):
        assert not [e for e in logged if secret_text in repr(e)]
        assert secret_text not in caplog.text
        assert await _columns_holding(pool, secret_text) == []
