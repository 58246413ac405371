"""Calling a provider's HTTP API: one session per provider, a slot bounding the calls in flight,
and what a request that got no answer, or a 429 or 5xx answer, means for the notification.

The runtime bounds each ``send`` with the provider's timeout; the session has no timeout of its
own, so there is one clock, not a second and longer one that never fires.

Shared by the HTTP providers of every channel (SendGrid, Twilio, Vonage). The push service's
``http`` module predates it and is a near twin: it should move onto this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from herald_common.errors import TransientError

CONCURRENCY = 32
"""Calls one provider has in flight at once (each on a pooled, kept-alive connection)."""

MAX_BODY = 64 * 1024
"""Bytes of an answer read: providers answer in a few hundred; more is a misconfigured URL."""

MAX_EXCERPT = 300
"""Characters of a provider's error text kept in an error message."""


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON; None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class HttpApi:
    """A provider's HTTP client: made in the running loop on first use, closed by ``close``."""

    def __init__(self, provider: str, *, concurrency: int = CONCURRENCY) -> None:
        self.provider = provider
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Waits (untimed) until fewer than ``concurrency`` calls are in flight."""
        return self._slots

    async def post(self, url: str, **request: Any) -> HttpReply:
        """POST and read the answer, whatever its status.

        A request that got no answer is a ``TransientError``: when no connection was made nothing
        was sent; otherwise the provider may have taken the message (``maybe_delivered``).
        """
        try:
            async with self._session_().post(url, **request) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) >= MAX_BODY:
                        break
                return HttpReply(response.status, response.headers, bytes(body))
        except aiohttp.ClientConnectorError as exc:
            raise TransientError(
                f"{self.provider}: cannot connect ({exc}); nothing was sent", provider=self.provider
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"{self.provider}: connection failed after the request was sent "
                f"({type(exc).__name__}: {exc}); it may have been delivered",
                provider=self.provider,
                maybe_delivered=True,
            ) from None

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # As many connections as slots, so a call in its slot never waits for one.
                connector=aiohttp.TCPConnector(limit=self._concurrency),
                timeout=aiohttp.ClientTimeout(),  # none: the runtime times each send
                headers={"User-Agent": "herald"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or None."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def excerpt(text: str) -> str:
    """A provider's error text on one line, shortened for an error message."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_EXCERPT else text[: MAX_EXCERPT - 1] + "…"


def overloaded(provider: str, reply: HttpReply, detail: str) -> TransientError | None:
    """The transient error for a 429 or 5xx answer (with its Retry-After), else None.

    A 502 or 504 comes from a gateway that lost the provider's answer, not from the provider
    refusing: the message may have been taken, so its retry is marked a possible duplicate.
    """
    if reply.status != 429 and reply.status < 500:
        return None
    return TransientError(
        f"{provider} answered {reply.status}: {detail}",
        provider=provider,
        retry_after=retry_after(reply.headers),
        maybe_delivered=reply.status in (502, 504),
    )
