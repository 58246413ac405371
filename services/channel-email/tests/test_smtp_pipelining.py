"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the relay offers it, one at a time
when it does not, with the same results and errors either way.

The relay is FakeSmtp (aiosmtpd), which takes pipelined commands but does not advertise
PIPELINING; ``RecordingSmtp`` advertises it when told to, and records what the client had already
sent when MAIL was handled: the RCPT and DATA lines when pipelined, nothing when the client waited
for MAIL's reply. The failures at each step (stalls, hang-ups, refusals) are in
test_smtp_maybe_delivered.py, run both ways.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import SmtpProvider, _take_reply
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailContent, EmailDelivery
from tests.support.providers import send_like_the_runtime as _send
from tests.support.smtp import FakeSmtp, make_certificates


@dataclass
class RecordingSmtp(FakeSmtp):
    pipelining: bool = False
    buffered_at_mail: list[bytes] = field(default_factory=list)
    """For each MAIL: the bytes the server had received after it, not yet read."""
    resets: int = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            self.buffered_at_mail.append(bytes(server._reader._buffer))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.resets += 1
        return "250 OK"


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def relay(request: pytest.FixtureRequest) -> Iterator[RecordingSmtp]:
    smtp = RecordingSmtp(pipelining=request.param)
    smtp.start()
    try:
        yield smtp
    finally:
        smtp.stop()


@pytest.fixture
async def provider(relay: RecordingSmtp) -> AsyncIterator[SmtpProvider]:
    settings = EmailSettings(
        email_smtp_port=relay.port,
        email_from="Herald <noreply@herald.example>",
        email_smtp_connections=1,
        email_smtp_timeout=5,
    )
    smtp = SmtpProvider(settings)
    yield smtp
    await smtp.close()


def _delivery(
    to: str, subject: str = "Hello", text: str = "hi", html: str | None = None
) -> EmailDelivery:
    return EmailDelivery(
        id=uuid.uuid4(),
        to=to,
        content=EmailContent(subject=subject, text=text, html=html),
        created_at=datetime.now(UTC),
    )


def _pipelined(to: str) -> bytes:
    return f"RCPT TO:<{to}>\r\nDATA\r\n".encode()


def _expected_buffers(relay: RecordingSmtp, recipients: list[str]) -> list[bytes]:
    return [_pipelined(to) if relay.pipelining else b"" for to in recipients]


async def test_every_message_arrives_once_as_sent(
    provider: SmtpProvider, relay: RecordingSmtp
) -> None:
    deliveries = [
        _delivery("ada@example.com"),
        _delivery("bob@example.com", subject="Réservation confirmée ✓", text="Grüße, 日本 😀"),
        _delivery("cy@example.com", subject="Both", text=".dot\nline", html="<p>é</p>"),
        _delivery("di@example.com", subject="x" * 300, text="y" * 2000),
    ]
    receipts = [await _send(provider, d) for d in deliveries]
    assert [r.provider_message_id for r in receipts] == [
        f"<{d.id}@herald.example>" for d in deliveries
    ]
    assert dict(relay.counts()) == {str(d.id): 1 for d in deliveries}
    for delivery in deliveries:
        [received] = relay.by_id(str(delivery.id))
        assert received.recipients == [delivery.to]
        message = received.message
        assert message["Subject"] == delivery.content.subject
        text = message.get_body(("plain",))
        assert text is not None
        assert text.get_content().replace("\r\n", "\n").rstrip("\n") == delivery.content.text
        if delivery.content.html is not None:
            html = message.get_body(("html",))
            assert html is not None
            assert html.get_content() == delivery.content.html
    assert relay.buffered_at_mail == _expected_buffers(relay, [d.to for d in deliveries])
    assert relay.sessions == 1


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ("550 5.1.1 no such user", PermanentError, "recipient refused: 550 5.1.1 no such user"),
        ("452 4.2.2 mailbox full", TransientError, "recipient deferred: 452 4.2.2 mailbox full"),
    ],
)
async def test_a_refused_recipient_maps_as_before_and_the_connection_is_reset(
    provider: SmtpProvider,
    relay: RecordingSmtp,
    reply: str,
    error: type[Exception],
    message: str,
) -> None:
    relay.fail("gone@example.com", reply)
    with pytest.raises(error) as raised:
        await _send(provider, _delivery("gone@example.com"))
    assert str(raised.value) == message
    if isinstance(raised.value, TransientError):
        assert not raised.value.provider_fault
        assert not raised.value.maybe_delivered
    assert relay.resets == 1
    after = _delivery("ada@example.com")
    await _send(provider, after)
    assert relay.counts() == {str(after.id): 1}
    assert relay.sessions == 1  # reset (RSET) and reused
    assert relay.buffered_at_mail == _expected_buffers(
        relay, ["gone@example.com", "ada@example.com"]
    )


async def test_concurrent_sends_over_several_connections(relay: RecordingSmtp) -> None:
    settings = EmailSettings(email_smtp_port=relay.port, email_smtp_connections=3)
    provider = SmtpProvider(settings)
    deliveries = [_delivery(f"user{i}@example.com") for i in range(30)]
    try:
        await asyncio.gather(*(_send(provider, d) for d in deliveries))
    finally:
        await provider.close()
    assert dict(relay.counts()) == {str(d.id): 1 for d in deliveries}
    assert sorted(relay.buffered_at_mail) == sorted(
        _expected_buffers(relay, [d.to for d in deliveries])
    )


async def test_pipelining_over_starttls(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    relay = RecordingSmtp(tls_context=certificates.server_context(), pipelining=True)
    relay.start()
    settings = EmailSettings(
        email_smtp_port=relay.port,
        email_smtp_timeout=5,
        email_smtp_tls_ca_file=str(certificates.ca_file),
    )
    provider = SmtpProvider(settings)
    deliveries = [_delivery("ada@example.com"), _delivery("bob@example.com")]
    try:
        for delivery in deliveries:
            await _send(provider, delivery)
    finally:
        await provider.close()
        relay.stop()
    assert [r.tls for r in relay.received] == [True, True]
    assert relay.buffered_at_mail == [_pipelined(d.to) for d in deliveries]


async def test_aiosmtplibs_reader_loses_replies_that_arrive_together() -> None:
    """Why the provider reads pipelined replies itself: aiosmtplib's protocol parses one reply
    per chunk received, so the second of three replies sent in one write is never read. If this
    fails, aiosmtplib reads them now, and ``_PipelinedReplies`` could go."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-relay.test\r\n250 PIPELINING\r\n")
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 OK\r\n250 OK\r\n354 go ahead\r\n")
        await reader.read()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=server.sockets[0].getsockname()[1], start_tls=False
    )
    try:
        await client.connect()
        await client.ehlo()
        assert client.protocol is not None
        client.protocol.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert (await client.protocol.read_response(timeout=1)).code == 250
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
            await client.protocol.read_response(timeout=0.3)
    finally:
        client.close()
        server.close()


def test_replies_are_taken_whole_and_in_order() -> None:
    buffer = bytearray(b"250-first\r\n250 second\r\n35")
    assert _take_reply(buffer) == (250, "first\nsecond")
    assert _take_reply(buffer) is None  # incomplete: kept
    buffer += b"4 go ahead\r\n"
    assert _take_reply(buffer) == (354, "go ahead")
    assert buffer == b""
    with pytest.raises(aiosmtplib.SMTPResponseException, match="Malformed"):
        _take_reply(bytearray(b"hello\r\n"))
