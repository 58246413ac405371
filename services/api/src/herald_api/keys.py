"""API keys: making secrets, storing their hashes, finding, listing and revoking keys.

A secret is ``hrld_`` and 256 random bits (43 URL-safe base64 characters): the prefix lets secret
scanners recognise a leaked one. Only its SHA-256 is stored, and a key is found by that hash. A
slow KDF (bcrypt, argon2) protects low-entropy passwords from guessing; nobody can enumerate 2^256
secrets, so SHA-256 is as safe here, and cheap enough to verify on every request. A bootstrap
secret a deployment chose (``HERALD_API_BOOTSTRAP_KEY``, 32 characters or more) should be as random.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web

from . import audit
from .bodies import parse_model, read_json
from .database import Database
from .errors import Conflict, NotFound
from .models import DEFAULT_PROJECT, SCOPES, ApiKey, CreatedKey, KeyList, KeyRequest, Me
from .notifications import parse_id
from .principal import VerifiedKey, principal
from .responses import json_model
from .settings import API_SETTINGS, SECRET_PATTERN

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from herald_common.db import Executor

    Connection = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

log = structlog.get_logger("herald_api.keys")

SECRET_PREFIX = "hrld_"


def well_formed(secret: str) -> bool:
    """Whether ``secret`` can be a key at all: anything else is refused before it is hashed or
    looked up (no query, no cache entry, no encoding error for bytes the HTTP parser let in)."""
    return SECRET_PATTERN.fullmatch(secret) is not None


_KEY_COLUMNS = "id, name, project, scopes, rate_limit, created_at, revoked_at"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey.model_validate(dict(row))


async def find_key(executor: Executor, secret: str) -> VerifiedKey | None:
    """The unrevoked key with this secret, or None."""
    digest = secret_hash(secret)
    row = await executor.fetchrow(
        """SELECT id, project, scopes, rate_limit, secret_hash FROM api_keys
           WHERE secret_hash = $1 AND revoked_at IS NULL""",
        digest,
    )
    # The index found the row by hash; the comparison is constant-time all the same, so that
    # no comparison of secret material anywhere depends on how much of it matched.
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), digest):
        return None
    return VerifiedKey(row["id"], row["project"], frozenset(row["scopes"]), row["rate_limit"])


async def create_key(
    connection: Connection, request: KeyRequest, actor: VerifiedKey | None
) -> CreatedKey:
    """A new key (its project made if new), audited; the secret is in the result only."""
    secret = new_secret()
    scopes = [s for s in SCOPES if s in request.scopes]
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING", request.project
        )
        row = await connection.fetchrow(
            f"""INSERT INTO api_keys (id, name, project, scopes, secret_hash, rate_limit)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_KEY_COLUMNS}""",
            uuid.uuid4(),
            request.name,
            request.project,
            scopes,
            secret_hash(secret),
            request.rate_limit,
        )
        assert row is not None
        key = _key(row)
        await audit.record(
            connection,
            actor,
            "key.create",
            str(key.id),
            {"name": key.name, "project": key.project, "scopes": scopes},
        )
    return CreatedKey(**key.model_dump(), secret=secret)


async def list_keys(executor: Executor) -> list[ApiKey]:
    rows = await executor.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
    return [_key(row) for row in rows]


async def revoke_key(connection: Connection, id: UUID, actor: VerifiedKey | None) -> ApiKey:
    """Revoke a key, audited: 404 unknown, 409 already revoked. Replicas that cached it as valid
    refuse it once their cache entry expires (``HERALD_API_KEY_CACHE_TTL``)."""
    async with connection.transaction():
        row = await connection.fetchrow(
            f"""UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
                RETURNING {_KEY_COLUMNS}""",
            id,
        )
        if row is None:
            if await connection.fetchval("SELECT true FROM api_keys WHERE id = $1", id):
                raise Conflict(f"key {id} is already revoked")
            raise NotFound(f"no key with id {id}")
        await audit.record(connection, actor, "key.revoke", str(id), {"name": row["name"]})
    return _key(row)


async def ensure_bootstrap_key(connection: Connection, secret: str) -> None:
    """Make sure a key with this secret exists (project ``default``, every scope), and revoke a
    bootstrap key of an earlier secret (a rotated HERALD_API_BOOTSTRAP_KEY must stop working).

    Replicas starting together race here: the unique hash settles it, one row, no error. A
    bootstrap key that was revoked stays revoked: revoking is an operator's decision, and a
    restart must not undo it (it is logged, as the deployment may have no admin key left).
    """
    digest = secret_hash(secret)
    async with connection.transaction():
        created = await connection.fetchval(
            """INSERT INTO api_keys (id, name, project, scopes, secret_hash, bootstrap)
               VALUES ($1, 'bootstrap', $2, $3, $4, true)
               ON CONFLICT (secret_hash) DO NOTHING RETURNING id""",
            uuid.uuid4(),
            DEFAULT_PROJECT,
            list(SCOPES),
            digest,
        )
        if created is not None:
            await audit.record(connection, None, "key.create", str(created), {"name": "bootstrap"})
        rotated = await connection.fetch(
            """UPDATE api_keys SET revoked_at = now()
               WHERE bootstrap AND secret_hash <> $1 AND revoked_at IS NULL RETURNING id""",
            digest,
        )
        for row in rotated:
            why = {"name": "bootstrap", "why": "bootstrap secret changed"}
            await audit.record(connection, None, "key.revoke", str(row["id"]), why)
        revoked = await connection.fetchval(
            "SELECT revoked_at IS NOT NULL FROM api_keys WHERE secret_hash = $1", digest
        )
    if revoked:
        log.warning("the bootstrap key (HERALD_API_BOOTSTRAP_KEY) is revoked; it stays revoked")


class KeyStore:
    """The keys of the API's database, for its routes and its auth middleware.

    Verifying a key would cost a query per request; instead each replica remembers what it found
    for a secret's hash (a key, or none) for ``ttl`` seconds (at most 5). A key revoked through
    any replica or ``herald-keys`` therefore stops working everywhere within ``ttl``, and at once
    on the replica that revoked it. Concurrent requests with one uncached secret share one query.
    """

    _MAX_ENTRIES = 10_000
    """Beyond this many remembered unknown hashes (a flood of made-up secrets) that cache starts
    over; known keys are remembered apart, so such a flood never evicts them."""
    _LOOKUP_CONNECTIONS = 2
    """Lookups of uncached secrets in flight at once: made-up secrets cannot take the pool."""

    def __init__(self, database: Database, ttl: float) -> None:
        self._database = database
        self._ttl = ttl
        self._cache: dict[bytes, tuple[float, VerifiedKey | None]] = {}
        self._unknown: dict[bytes, float] = {}
        self._lookup_slots = asyncio.Semaphore(self._LOOKUP_CONNECTIONS)
        self._lookups: dict[bytes, asyncio.Future[VerifiedKey | None]] = {}
        """Queries in flight, by hash."""

    async def verify(self, secret: str) -> VerifiedKey | None:
        """The unrevoked key with this secret (as of at most ``ttl`` seconds ago), or None."""
        digest = secret_hash(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._unknown.get(digest, 0.0) > now:
            return None
        lookup = self._lookups.get(digest)
        if lookup is None:
            # A task of its own: a request that goes away does not cancel the others' lookup.
            lookup = asyncio.ensure_future(self._look_up(digest, secret))
            self._lookups[digest] = lookup
        return await asyncio.shield(lookup)

    async def _look_up(self, digest: bytes, secret: str) -> VerifiedKey | None:
        try:
            async with self._lookup_slots:
                asked_at = time.monotonic()
                async with self._database.connection() as connection:
                    key = await find_key(connection, secret)
        finally:
            del self._lookups[digest]
        if key is None:
            if len(self._unknown) >= self._MAX_ENTRIES:
                self._unknown.clear()
            self._unknown[digest] = asked_at + self._ttl
        else:
            self._cache[digest] = (asked_at + self._ttl, key)
        return key

    def forget(self, id: UUID) -> None:
        """Drop a key from this replica's cache (it was just revoked here)."""
        self._cache = {h: e for h, e in self._cache.items() if e[1] is None or e[1].id != id}

    async def create(self, request: KeyRequest, actor: VerifiedKey) -> CreatedKey:
        async with self._database.connection() as connection:
            return await create_key(connection, request, actor)

    async def all(self) -> list[ApiKey]:
        async with self._database.connection() as connection:
            return await list_keys(connection)

    async def me(self, key: VerifiedKey) -> Me:
        """The requesting key as the console shows it (its name read; its scopes as verified)."""
        async with self._database.connection() as connection:
            name = await connection.fetchval("SELECT name FROM api_keys WHERE id = $1", key.id)
        return Me.model_validate(
            {
                "id": key.id,
                "name": name or "",
                "project": key.project,
                "scopes": [s for s in SCOPES if s in key.scopes],
            }
        )

    async def revoke(self, id: UUID, actor: VerifiedKey) -> ApiKey:
        async with self._database.connection() as connection:
            revoked = await revoke_key(connection, id, actor)
        self.forget(id)
        return revoked


KEYS = web.AppKey("keys", KeyStore)


# --- routes -----------------------------------------------------------------------------------


async def create_key_route(request: web.Request) -> web.Response:
    settings = request.app[API_SETTINGS]
    body = parse_model(KeyRequest, await read_json(request, settings.api_max_body_bytes))
    created = await request.app[KEYS].create(body, principal(request))
    # The secret is in this response and nowhere else: no cache may keep it.
    return json_model(
        created,
        status=201,
        headers={"Location": f"/v1/keys/{created.id}", "Cache-Control": "no-store"},
    )


async def list_keys_route(request: web.Request) -> web.Response:
    return json_model(KeyList(items=await request.app[KEYS].all()))


async def revoke_key_route(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    return json_model(await request.app[KEYS].revoke(id, principal(request)))


async def me_route(request: web.Request) -> web.Response:
    return json_model(await request.app[KEYS].me(principal(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/me", me_route)
    app.router.add_post("/v1/keys", create_key_route)
    app.router.add_get("/v1/keys", list_keys_route)
    app.router.add_delete("/v1/keys/{id}", revoke_key_route)
