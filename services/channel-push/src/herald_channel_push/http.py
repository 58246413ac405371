"""What both push providers do with HTTP: a client session of their own, Retry-After (read as
``herald_common.http_api`` reads it for every HTTP provider), and turning a failed request into
the right transient error."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from herald_common.errors import TransientError
from herald_common.http_api import (
    retry_after as retry_after,  # shared with the other HTTP providers
)

MAX_ERROR_BODY = 500
"""Characters of a provider's error body kept in an error message."""


class ProviderSession:
    """A provider's own aiohttp session: made on first use, inside the running loop (aiohttp
    binds it there), made again if it was closed, and closed with the provider."""

    def __init__(self, *, connections: int, timeout: float) -> None:
        self._connections = connections
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(connections=self._connections, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def new_session(*, connections: int, timeout: float) -> aiohttp.ClientSession:
    """A session for one provider; create it inside the running loop (aiohttp binds it there).

    ``timeout`` bounds each request as a whole, so a provider that stops answering fails the
    request on its own clock, not only on the runtime's.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": "herald-channel-push"},
    )


def request_failed(
    exc: aiohttp.ClientError | TimeoutError, *, provider: str, what: str, delivers: bool
) -> TransientError:
    """The transient error for a request that got no HTTP answer.

    ``delivers``: the request carried the notification. Only a connection that was never made
    proves that nothing was sent; after a timeout or a dropped connection the provider may have
    taken the notification, so its retry is marked a possible duplicate.
    """
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return TransientError(f"{what}: cannot connect ({exc!r})", provider=provider)
    if isinstance(exc, TimeoutError):
        cause = "no answer in time"
    else:
        cause = f"connection failed ({type(exc).__name__}: {exc})"
    if delivers:
        return TransientError(
            f"{what}: {cause}; it may have been delivered",
            provider=provider,
            maybe_delivered=True,
        )
    return TransientError(f"{what}: {cause}", provider=provider)


def excerpt(text: str) -> str:
    """A provider's error body, shortened for an error message."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_BODY else text[: MAX_ERROR_BODY - 1] + "…"


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, or None when it is not one (an error page from a proxy)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
