"""A real SMTP server (aiosmtpd) that tests start, program and inspect.

It records every message it accepts, keyed by the ``X-Herald-Notification-Id`` header, and can be
told to answer a recipient with an error a number of times (or always), like a provider outage,
to answer each message only after a delay, like a slow relay, and to talk TLS (STARTTLS or
implicit) with a certificate from ``make_certificates``.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .processes import free_port

NOTIFICATION_HEADER = "X-Herald-Notification-Id"


@dataclass
class Received:
    notification_id: str
    recipients: list[str]
    message: EmailMessage
    at: float
    tls: bool = False
    """The message came over an encrypted connection (STARTTLS or implicit TLS)."""


@dataclass
class _Rule:
    reply: str
    times: int | None  # None: always
    encoding: str | None  # None: as aiosmtpd encodes replies (ASCII)

    def wire(self) -> str | bytes:
        # aiosmtpd writes a reply given as bytes unchanged, so a reply can be in any charset.
        return self.reply if self.encoding is None else self.reply.encode(self.encoding)


@dataclass
class FakeSmtp:
    """Start with ``start()``; ``port`` is where it listens.

    With ``tls_context`` (a server context, e.g. ``Certificates.server_context()``) it offers
    STARTTLS, or with ``implicit_tls`` too talks TLS from the first byte. With ``credentials``
    (user, password) it accepts mail only after AUTH, which it offers only over TLS.
    """

    host: str = "127.0.0.1"
    tls_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    credentials: tuple[str, str] | None = None
    received: list[Received] = field(default_factory=list)
    refused: list[tuple[str, str, float]] = field(default_factory=list)
    _rules: dict[str, _Rule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None
    _port: int = 0
    _delay: float = 0.0
    _in_data: int = 0
    sessions: int = 0

    def start(self) -> FakeSmtp:
        self._port = free_port()
        options: dict[str, Any] = {}
        if self.tls_context is not None:
            options["ssl_context" if self.implicit_tls else "tls_context"] = self.tls_context
        if self.credentials is not None:
            options |= {"authenticator": self._authenticate, "auth_required": True}
        self._controller = Controller(
            self, hostname=self.host, port=self._port, ready_timeout=10, **options
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def port(self) -> int:
        return self._port

    def fail(
        self, recipient: str, reply: str, times: int | None = None, encoding: str | None = None
    ) -> None:
        """Answer RCPT for ``recipient`` with ``reply`` (e.g. "451 4.3.0 try later").

        ``encoding`` puts the reply on the wire in that charset, like a relay answering
        ``550 5.1.1 Empfänger unbekannt`` in Latin-1 (``encoding="latin-1"``).
        """
        with self._lock:
            self._rules[recipient.lower()] = _Rule(reply, times, encoding)

    @property
    def in_data(self) -> int:
        """Messages received and not yet answered: their senders wait for the relay's reply."""
        with self._lock:
            return self._in_data

    def delay(self, seconds: float) -> None:
        """Answer each message (the reply after its DATA) ``seconds`` late, like a slow relay.

        The message is recorded when it arrives, before the wait: a client that gives up waiting
        still counts as having delivered it, as it may have with a real relay.
        """
        with self._lock:
            self._delay = seconds

    def heal(self, recipient: str) -> None:
        with self._lock:
            self._rules.pop(recipient.lower(), None)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        given = (
            (data.login.decode(), data.password.decode())
            if isinstance(data, LoginPassword)
            else None
        )
        # handled=False: aiosmtpd then answers a failure itself (535) instead of leaving it to us.
        return AuthResult(success=given == self.credentials, handled=False)

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
    ) -> str | bytes:
        with self._lock:
            rule = self._rules.get(address.lower())
            if rule is not None and (rule.times is None or rule.times > 0):
                if rule.times is not None:
                    rule.times -= 1
                self.refused.append((address, rule.reply, time.time()))
                return rule.wire()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = message_from_bytes(raw, policy=policy.default)
        transport = server.transport
        encrypted = transport is not None and transport.get_extra_info("ssl_object") is not None
        with self._lock:
            self.received.append(
                Received(
                    str(message.get(NOTIFICATION_HEADER, "")),
                    list(envelope.rcpt_tos),
                    message,
                    time.time(),
                    encrypted,
                )
            )
            delay = self._delay
            self._in_data += 1
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            with self._lock:
                self._in_data -= 1
        return "250 OK queued"

    def counts(self) -> Counter[str]:
        """How many times each notification id was received."""
        with self._lock:
            return Counter(r.notification_id for r in self.received)

    def by_id(self, notification_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.notification_id == notification_id]


@dataclass(frozen=True)
class Certificates:
    """A throw-away CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: Path) -> Certificates:
    """Create a CA and a server certificate under ``directory`` with the ``openssl`` command."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca = ["-subj", "/CN=Herald test CA", "-addext", "basicConstraints=critical,CA:TRUE"]
    ca += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    openssl("req", "-x509", *key, *ca, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2")
    openssl("req", *key, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "server.ext"]
    openssl("x509", "-req", *sign, "-in", "server.csr", "-out", "server.pem", "-days", "2")
    return Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
