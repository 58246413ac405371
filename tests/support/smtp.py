"""A real SMTP server (aiosmtpd) that tests start, program and inspect.

It records every message it accepts, keyed by the ``X-Herald-Notification-Id`` header, and can be
told to answer a recipient with an error a number of times (or always), like a provider outage.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .processes import free_port

NOTIFICATION_HEADER = "X-Herald-Notification-Id"


@dataclass
class Received:
    notification_id: str
    recipients: list[str]
    message: Message
    at: float


@dataclass
class _Rule:
    reply: str
    times: int | None  # None: always


@dataclass
class FakeSmtp:
    """Start with ``start()``; ``port`` is where it listens."""

    host: str = "127.0.0.1"
    received: list[Received] = field(default_factory=list)
    refused: list[tuple[str, str, float]] = field(default_factory=list)
    _rules: dict[str, _Rule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None
    _port: int = 0
    sessions: int = 0

    def start(self) -> FakeSmtp:
        self._port = free_port()
        self._controller = Controller(self, hostname=self.host, port=self._port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def port(self) -> int:
        return self._port

    def fail(self, recipient: str, reply: str, times: int | None = None) -> None:
        """Answer RCPT for ``recipient`` with ``reply`` (e.g. "451 4.3.0 try later")."""
        with self._lock:
            self._rules[recipient.lower()] = _Rule(reply, times)

    def heal(self, recipient: str) -> None:
        with self._lock:
            self._rules.pop(recipient.lower(), None)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self._lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            rule = self._rules.get(address.lower())
            if rule is not None and (rule.times is None or rule.times > 0):
                if rule.times is not None:
                    rule.times -= 1
                self.refused.append((address, rule.reply, time.time()))
                return rule.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = message_from_bytes(raw, policy=policy.default)
        with self._lock:
            self.received.append(
                Received(
                    str(message.get(NOTIFICATION_HEADER, "")),
                    list(envelope.rcpt_tos),
                    message,
                    time.time(),
                )
            )
        return "250 OK queued"

    def counts(self) -> Counter[str]:
        """How many times each notification id was received."""
        with self._lock:
            return Counter(r.notification_id for r in self.received)

    def by_id(self, notification_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.notification_id == notification_id]
