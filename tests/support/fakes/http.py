"""What every fake provider shares: a real aiohttp server on a free 127.0.0.1 port that records
each request and can be told to fail the next ones or to answer slowly.

A provider's fake subclasses ``FakeHttpServer``, adds its routes (``routes``), answers as the
provider does, and appends what it accepted to ``accepted``. Programmed failures and the delay
apply to every request before the provider's route sees it, so a test can stage an outage of any
fake the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, with its body decoded where it is form or JSON."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    form: dict[str, str]
    """Fields of an ``application/x-www-form-urlencoded`` body (empty otherwise)."""
    json: Any
    """A JSON body, decoded (None otherwise)."""
    at: float

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def basic_auth(self) -> tuple[str, str] | None:
        """The user and password of HTTP basic authentication, if the request has them."""
        scheme, _, value = (self.authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            return None
        return (user, password) if sep else None

    def bearer_token(self) -> str | None:
        scheme, _, value = (self.authorization or "").partition(" ")
        return value if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class Accepted:
    """A message a fake took, as a test asks about it."""

    to: str
    notification_id: str | None
    provider_message_id: str
    request: RecordedRequest
    segments: int | None = None


@dataclass(frozen=True)
class _Failure:
    status: int
    body: Any
    headers: Mapping[str, str]


RECORDED = web.RequestKey("recorded", RecordedRequest)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeHttpServer:
    """Start with ``start()`` or ``async with``; ``url`` is where it listens."""

    delay: float = 0.0
    """Seconds every response waits (all requests, failures too): a slow provider."""
    requests: list[RecordedRequest] = field(default_factory=list)
    """Every request received, in order, whatever the answer."""
    accepted: list[Accepted] = field(default_factory=list)
    """Messages the provider's route accepted."""
    _failures: deque[_Failure] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    # -- what a provider's fake defines -------------------------------------------------------

    def routes(self) -> Iterable[web.RouteDef]:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        """The body of a programmed failure that names none, shaped as the provider's errors."""
        return {"error": f"fake failure {status}"}

    # -- programming ----------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        body: Any = None,
        retry_after: float | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``body``, JSON unless it is a
        str or bytes, or the provider's error body), before the provider's route sees them."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        failure = _Failure(status, self.error_body(status) if body is None else body, extra)
        self._failures.extend([failure] * count)

    # -- asking ---------------------------------------------------------------------------------

    def count_to(self, to: str) -> int:
        """Messages accepted for the recipient ``to``."""
        return sum(1 for a in self.accepted if a.to == to)

    def count_for(self, notification_id: object) -> int:
        """Messages accepted that carried the notification id ``notification_id``."""
        return sum(1 for a in self.accepted if a.notification_id == str(notification_id))

    # -- running --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._port, "not started"
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> Self:
        app = web.Application(middlewares=[self._record, self._programmed])
        app.add_routes(list(self.routes()))
        # A short shutdown: a test stops the fake with slow answers still pending.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        form: dict[str, str] = {}
        decoded: Any = None
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: str(v) for k, v in (await request.post()).items()}
        elif request.content_type == "application/json":
            with contextlib.suppress(ValueError):
                decoded = json.loads(body)
        recorded = RecordedRequest(
            request.method, request.path, CIMultiDict(request.headers), body, form, decoded,
            time.monotonic(),
        )  # fmt: skip
        self.requests.append(recorded)
        request[RECORDED] = recorded
        return await handler(request)

    @web.middleware
    async def _programmed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.delay:
            # Woken by stop(), so a slow answer never holds up the end of a test.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.delay)
        if self._failures:
            failure = self._failures.popleft()
            if isinstance(failure.body, str | bytes):
                return web.Response(
                    status=failure.status, body=failure.body, headers=failure.headers
                )
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        return await handler(request)


def recorded(request: web.Request) -> RecordedRequest:
    """The record of ``request`` that the fake made when it arrived."""
    return request[RECORDED]
