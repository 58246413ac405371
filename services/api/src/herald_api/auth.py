"""Authentication, scopes and per-key rate limits of the ``/v1`` routes (a middleware).

Every ``/v1`` request needs ``Authorization: Bearer <secret>`` of an unrevoked key (else 401 with
``WWW-Authenticate: Bearer``), within the key's rate limit (else 429 with ``Retry-After``), with
the scope its operation requires (else 403). The scope of each operation is read from the OpenAPI
document's ``security`` requirement, the one table of operations, so a route cannot be added
without one (``test_auth`` also tries every route). Other paths (ops routes, the document) are
open.

The rate limit is a token bucket per key in each replica's memory: rate R a second, bursts of 2R.
With N replicas behind a balancer a key may get up to N times R; a shared bucket would cost a
database or broker round trip per request, which the API's latency budget has no room for.
"""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.typedefs import Handler

from herald_common.ratelimit import TokenBucket

from .errors import Forbidden, RateLimited, Unauthenticated
from .keys import KEYS, well_formed
from .openapi import required_scopes
from .principal import PRINCIPAL, VerifiedKey

_PROTECTED_PREFIX = "/v1/"
_BEARER = "bearer "


class RateLimits:
    """One token bucket per key, made on the key's first request."""

    def __init__(self, default_rate: float) -> None:
        self._default = default_rate
        self._buckets: dict[object, TokenBucket] = {}

    def wait(self, key: VerifiedKey) -> float:
        """Take a token for one request: 0.0, or the seconds until one is there (refused)."""
        rate = self._default if key.rate_limit is None else key.rate_limit
        if rate <= 0:
            return 0.0
        bucket = self._buckets.get(key.id)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key.id] = TokenBucket(rate, max(1.0, 2 * rate))
        return bucket.try_take()


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


def _secret(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[: len(_BEARER)].lower() != _BEARER or not header[len(_BEARER) :].strip():
        raise Unauthenticated("send an API key: Authorization: Bearer <secret>")
    secret = header[len(_BEARER) :].strip()
    if not well_formed(secret):
        raise Unauthenticated("the API key is unknown or revoked")
    return secret


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(_PROTECTED_PREFIX):
        return await handler(request)
    # The problem details never repeat the header: what was sent stays out of every response.
    key = await request.app[KEYS].verify(_secret(request))
    if key is None:
        raise Unauthenticated("the API key is unknown or revoked")
    wait = request.app[RATE_LIMITS].wait(key)
    if wait > 0:
        raise RateLimited(
            "this API key is over its rate limit; retry later", retry_after=math.ceil(wait)
        )
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method  # aiohttp's HEAD of a GET
    # Routes outside the table (a 404, a 405) need a key, but no scope: they do nothing.
    scope = required_scopes().get((method, resource.canonical if resource is not None else ""))
    if scope is None and request.match_info.http_exception is None:
        # A route that matched but has no scope in the table: refuse rather than fail open.
        raise Forbidden("this operation has no scope; no key may use it")
    # An empty scope ("") is an operation any valid key may use (GET /v1/me).
    if scope and scope not in key.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope")
    request[PRINCIPAL] = key
    return await handler(request)
