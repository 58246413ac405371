"""OAuth 2.0 access tokens for a service account: the JWT bearer grant (RFC 7523), cached.

Google's flow for servers: sign a JWT with the service account's private key (RS256; ``iss`` the
account, ``scope`` what it asks for, ``aud`` the token endpoint), POST it to the account's
``token_uri``, get an access token that lives about an hour. google-auth would bring a blocking
transport (its async one is experimental); this does the same with aiohttp and PyJWT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from herald_common.errors import TransientError

from .http import excerpt, json_object, request_failed, retry_after
from .service_account import ServiceAccount

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
"""Seconds the signed assertion is valid: Google accepts at most an hour."""
REFRESH_MARGIN = 300.0
"""A token is replaced this long before it expires, so none expires on its way to the provider."""


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float


class AccessTokens:
    """The current access token of one service account for one scope.

    Concurrent callers share one token and, when it must be replaced, one request for it: the
    first caller fetches under a lock and the others find its token when they get the lock.
    """

    def __init__(
        self,
        account: ServiceAccount,
        scope: str,
        *,
        provider: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._account = account
        self._scope = scope
        self._provider = provider
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    async def get(self, session: aiohttp.ClientSession) -> str:
        """A token that is valid for a while yet; fetches one when there is none."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        async with self._lock:
            token = self._token
            if token is not None and self._clock() < token.refresh_at:
                return token.value
            self._token = await self._fetch(session)
            return self._token.value

    async def refresh(self, session: aiohttp.ClientSession, rejected: str) -> str:
        """A new token, when the provider rejected ``rejected`` before it was due to expire
        (revoked, or the clocks disagree). Callers holding the same rejected token share one."""
        async with self._lock:
            if self._token is not None and self._token.value == rejected:
                self._token = None
        return await self.get(session)

    def assertion(self) -> str:
        """The signed JWT that asks the token endpoint for an access token."""
        now = int(time.time())
        claims = {
            "iss": self._account.client_email,
            "scope": self._scope,
            "aud": self._account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": self._account.private_key_id} if self._account.private_key_id else None
        return jwt.encode(claims, self._account.private_key, algorithm="RS256", headers=headers)

    async def _fetch(self, session: aiohttp.ClientSession) -> _Token:
        what = f"fetching an access token from {self._account.token_uri}"
        form = {"grant_type": JWT_BEARER, "assertion": self.assertion()}
        try:
            async with session.post(self._account.token_uri, data=form) as response:
                text = await response.text()
                body = json_object(text)
                if response.status != 200:
                    raise self._refused(response.status, body, text, response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise request_failed(exc, provider=self._provider, what=what, delivers=False) from None
        if body is None or not isinstance(body.get("access_token"), str):
            raise TransientError(
                f"{what}: the answer has no access_token: {excerpt(text)}", provider=self._provider
            )
        lifetime = float(body.get("expires_in") or ASSERTION_LIFETIME)
        # A token that lives less than twice the margin (unusual) is still used for half its life.
        margin = min(REFRESH_MARGIN, lifetime / 2)
        return _Token(body["access_token"], self._clock() + lifetime - margin)

    def _refused(
        self, status: int, body: dict[str, Any] | None, text: str, headers: Any
    ) -> TransientError:
        # Every refusal is transient: it is about Herald's credentials (a revoked key, a clock
        # far off) or the endpoint, never about the notification, which was not sent. Retrying
        # gives an operator the retry ladder's time to fix the credentials.
        if body is not None and "error" in body:
            detail = f"{body.get('error')}: {body.get('error_description', '')}".rstrip(": ")
        else:
            detail = excerpt(text)
        hint = ""
        if body is not None and body.get("error") in ("invalid_grant", "invalid_client"):
            hint = " (check HERALD_PUSH_FCM_CREDENTIALS_FILE and this machine's clock)"
        return TransientError(
            f"the token endpoint refused Herald's service account with {status}: {detail}{hint}",
            provider=self._provider,
            retry_after=retry_after(headers),
        )
