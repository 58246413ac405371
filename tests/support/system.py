"""The whole of Herald as processes around a fake SMTP server, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .processes import ServiceProcess, free_port
from .smtp import FakeSmtp

FINAL = {"sent", "failed", "canceled"}

BOOTSTRAP_KEY = "HERALD_API_BOOTSTRAP_KEY"


def new_key() -> str:
    """A fresh API key secret: ``hrld_`` and 43 characters of URL-safe base64 (32 bytes)."""
    return "hrld_" + secrets.token_urlsafe(32)


@dataclass
class HeraldSystem:
    env: dict[str, str]
    smtp: FakeSmtp
    log_dir: Path
    key: str = ""
    """The API key every request of ``http`` carries: the API's bootstrap key (scopes send,
    read and admin, project ``default``)."""
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None

    @classmethod
    def build(
        cls,
        base_env: dict[str, str],
        smtp: FakeSmtp,
        log_dir: Path,
        *,
        email_replicas: int = 2,
        sms_replicas: int = 0,
        push_replicas: int = 0,
        **overrides: str,
    ) -> HeraldSystem:
        """The services around ``smtp``; each channel service runs as that many processes on
        its queues (``channel-email``, ``channel-email-2``, ...), as it is deployed. SMS and
        push are left out unless asked for. The API gets a random bootstrap key
        (``HERALD_API_BOOTSTRAP_KEY``, unless ``overrides`` sets one): ``system.key``."""
        api_port, dispatcher_port = free_port(), free_port()
        key = overrides.pop(BOOTSTRAP_KEY, None) or new_key()
        env = {
            **base_env,
            "HERALD_API_PORT": str(api_port),
            "HERALD_DISPATCHER_HTTP_PORT": str(dispatcher_port),
            "HERALD_EMAIL_SMTP_HOST": "127.0.0.1",
            "HERALD_EMAIL_SMTP_PORT": str(smtp.port),
            "HERALD_EMAIL_FROM": "Herald Tests <tests@herald.example>",
            "HERALD_OUTBOX_POLL_INTERVAL": "0.2",
            "HERALD_OUTBOX_GRACE": "2",
            "HERALD_SHUTDOWN_TIMEOUT": "10",
            **overrides,
        }
        system = cls(env, smtp, log_dir, key)
        system.services = {
            "api": ServiceProcess("api", {**env, BOOTSTRAP_KEY: key}, api_port, log_dir),
            "dispatcher": ServiceProcess("dispatcher", env, dispatcher_port, log_dir),
        }
        for kind, replicas, port_variable in (
            ("channel-email", email_replicas, "HERALD_EMAIL_HTTP_PORT"),
            ("channel-sms", sms_replicas, "HERALD_SMS_HTTP_PORT"),
            ("channel-push", push_replicas, "HERALD_PUSH_HTTP_PORT"),
        ):
            for replica in range(1, replicas + 1):
                name = kind if replica == 1 else f"{kind}-{replica}"
                port = free_port()
                system.services[name] = ServiceProcess(
                    name, {**env, port_variable: str(port)}, port, log_dir, kind=kind
                )
        return system

    @property
    def email_replicas(self) -> list[ServiceProcess]:
        return self.replicas("channel-email")

    def replicas(self, kind: str) -> list[ServiceProcess]:
        return [s for s in self.services.values() if s.kind == kind]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.services['api'].http_port}"

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Start the named services, or all of them."""
        chosen = list(self.services) if names is None else list(names)
        await asyncio.gather(*(self.services[n].start() for n in chosen))
        if self.http is None:
            self.http = aiohttp.ClientSession(headers=self.auth)

    @property
    def auth(self) -> dict[str, str]:
        """The header that authenticates a request to the API with ``key``."""
        return {"Authorization": f"Bearer {self.key}"}

    async def stop(self) -> None:
        for service in self.services.values():
            with contextlib.suppress(TimeoutError):
                await service.stop()
        if self.http is not None:
            await self.http.close()
            self.http = None

    def logs(self) -> str:
        return "\n".join(f"== {n} ==\n{s.tail(60)}" for n, s in self.services.items())

    # -- the API, as a user calls it ------------------------------------------------------------

    async def post(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.post(
            f"{self.api_url}/v1/notifications", json=body, headers=headers
        ) as response:
            payload: dict[str, Any] = await response.json()
            assert response.status in (200, 202), (response.status, payload)
            return payload

    async def post_batch(self, items: list[dict[str, Any]]) -> list[str]:
        assert self.http is not None
        async with self.http.post(
            f"{self.api_url}/v1/notifications/batch", json={"notifications": items}
        ) as response:
            payload = await response.json()
            assert response.status == 202, (response.status, payload)
            return [n["id"] for n in payload["notifications"]]

    async def get(self, notification_id: str) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(f"{self.api_url}/v1/notifications/{notification_id}") as response:
            assert response.status == 200, response.status
            payload: dict[str, Any] = await response.json()
            return payload

    async def wait_for(
        self, ids: list[str], statuses: set[str] = FINAL, timeout: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        """Poll the API until every notification has one of ``statuses``; returns them all."""
        deadline = time.monotonic() + timeout
        pending = set(ids)
        found: dict[str, dict[str, Any]] = {}
        while pending and time.monotonic() < deadline:
            for notification_id in list(pending)[:200]:
                body = await self.get(notification_id)
                if body["status"] in statuses:
                    found[notification_id] = body
                    pending.discard(notification_id)
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            sample = [await self.get(i) for i in list(pending)[:3]]
            raise AssertionError(
                f"{len(pending)} of {len(ids)} not in {statuses} after {timeout}s; e.g. {sample}"
                f"\n{self.logs()}"
            )
        return found


def email(to: str, subject: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "to": to,
        "content": {"subject": subject, "text": f"Text of {subject}", "html": f"<p>{subject}</p>"},
        **extra,
    }


def sms(to: str, text: str = "Hello from Herald", **extra: Any) -> dict[str, Any]:
    return {"channel": "sms", "to": to, "content": {"text": text}, **extra}


def push(
    to: dict[str, Any], title: str = "Hello", body: str = "From Herald", **content: Any
) -> dict[str, Any]:
    """A push notification to ``to``: ``{"provider": "fcm", "token": ...}`` or
    ``{"provider": "webpush", "subscription": {"endpoint": ..., "keys": {...}}}``."""
    return {"channel": "push", "to": to, "content": {"title": title, "body": body, **content}}
