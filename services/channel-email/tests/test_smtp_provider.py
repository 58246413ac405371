"""The SMTP provider against a real SMTP server: MIME, connection reuse and error mapping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import SmtpProvider
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailContent, EmailDelivery
from tests.support.processes import free_port
from tests.support.providers import send_like_the_runtime as _send
from tests.support.smtp import FakeSmtp


def _delivery(to: str, html: str | None = "<b>hi</b>", text: str = "hi") -> EmailDelivery:
    return EmailDelivery(
        id=uuid.uuid4(),
        to=to,
        content=EmailContent(subject="Subject ✓", text=text, html=html),
        created_at=datetime.now(UTC),
        correlation_id="corr-1",
    )


@pytest.fixture
async def provider(fake_smtp: FakeSmtp) -> AsyncIterator[SmtpProvider]:
    settings = EmailSettings(
        email_smtp_port=fake_smtp.port,
        email_from="Herald <noreply@herald.example>",
        email_smtp_connections=2,
    )
    smtp = SmtpProvider(settings)
    yield smtp
    await smtp.close()


async def test_the_message_is_text_with_an_html_alternative(
    provider: SmtpProvider, fake_smtp: FakeSmtp
) -> None:
    delivery = _delivery("ada@example.com")
    await _send(provider, delivery)
    [received] = fake_smtp.by_id(str(delivery.id))
    message = received.message
    assert message["Message-ID"] == f"<{delivery.id}@herald.example>"
    assert message["From"] == "Herald <noreply@herald.example>"
    assert message["X-Correlation-Id"] == "corr-1"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.walk()][1:] == ["text/plain", "text/html"]
    only_text = _delivery("ada@example.com", html=None)
    await _send(provider, only_text)
    [received] = fake_smtp.by_id(str(only_text.id))
    assert received.message.get_content_type() == "text/plain"
    assert received.message.get_content() == "hi\r\n"


async def test_sends_and_reuses_connections(provider: SmtpProvider, fake_smtp: FakeSmtp) -> None:
    deliveries = [_delivery(f"user{i}@example.com") for i in range(5)]
    receipts = [await _send(provider, d) for d in deliveries]
    assert [r.provider_message_id for r in receipts] == [
        f"<{d.id}@herald.example>" for d in deliveries
    ]
    assert {str(d.id): 1 for d in deliveries} == dict(fake_smtp.counts())
    assert fake_smtp.by_id(str(deliveries[0].id))[0].message["Subject"] == "Subject ✓"
    assert fake_smtp.sessions == 1  # one connection, reused


async def test_a_4xx_reply_is_transient(provider: SmtpProvider, fake_smtp: FakeSmtp) -> None:
    fake_smtp.fail("busy@example.com", "451 4.3.0 mailbox busy", times=1)
    with pytest.raises(TransientError, match="451"):
        await _send(provider, _delivery("busy@example.com"))
    await _send(provider, _delivery("busy@example.com"))  # the same connection works on
    assert fake_smtp.sessions == 1


async def test_a_5xx_reply_is_permanent(provider: SmtpProvider, fake_smtp: FakeSmtp) -> None:
    fake_smtp.fail("gone@example.com", "550 5.1.1 no such user")
    with pytest.raises(PermanentError, match="550"):
        await _send(provider, _delivery("gone@example.com"))
    await _send(provider, _delivery("other@example.com"))
    assert fake_smtp.sessions == 1  # reset (RSET) and reused


async def test_a_refused_connection_is_transient() -> None:
    settings = EmailSettings(email_smtp_port=free_port(), email_smtp_timeout=2)
    provider = SmtpProvider(settings)
    with pytest.raises(TransientError, match="connection") as raised:
        await _send(provider, _delivery("ada@example.com"))
    assert not raised.value.maybe_delivered
    await provider.close()


async def test_a_line_starting_with_a_dot_arrives_whole(
    provider: SmtpProvider, fake_smtp: FakeSmtp
) -> None:
    delivery = _delivery("ada@example.com", html=None, text=".hidden\n.\nend")
    await _send(provider, delivery)
    [received] = fake_smtp.by_id(str(delivery.id))
    assert received.message.get_content().splitlines() == [".hidden", ".", "end"]


async def test_deliveries_waiting_for_a_slot_are_not_timed(fake_smtp: FakeSmtp) -> None:
    """With one connection and a relay taking 0.4 s a message, the third of three deliveries
    waits 0.8 s for its slot; its 0.6 s timeout covers only its own send, so all get through."""
    fake_smtp.delay(0.4)
    settings = EmailSettings(email_smtp_port=fake_smtp.port, email_smtp_connections=1)
    provider = SmtpProvider(settings)
    deliveries = [_delivery(f"queued{i}@example.com") for i in range(3)]
    try:
        await asyncio.gather(*(_send(provider, d, timeout=0.6) for d in deliveries))
    finally:
        await provider.close()
    assert {str(d.id): 1 for d in deliveries} == dict(fake_smtp.counts())
    assert fake_smtp.sessions == 1


async def test_slots_bound_the_connections(fake_smtp: FakeSmtp) -> None:
    fake_smtp.delay(0.2)
    settings = EmailSettings(email_smtp_port=fake_smtp.port, email_smtp_connections=2)
    provider = SmtpProvider(settings)
    deliveries = [_delivery(f"many{i}@example.com") for i in range(6)]
    try:
        await asyncio.gather(*(_send(provider, d) for d in deliveries))
    finally:
        await provider.close()
    assert len(fake_smtp.received) == 6
    assert fake_smtp.sessions == 2


def test_email_retry_settings_override_the_general_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_RETRY_DELAYS", "1,2,3")
    monkeypatch.setenv("HERALD_RETRY_MAX_ATTEMPTS", "7")
    assert EmailSettings().retry_policy().delays == (1, 2, 3)
    monkeypatch.setenv("HERALD_EMAIL_RETRY_DELAYS", "0.5, 10")
    monkeypatch.setenv("HERALD_EMAIL_RETRY_MAX_ATTEMPTS", "2")
    policy = EmailSettings().retry_policy()
    assert (policy.delays, policy.max_attempts) == ((0.5, 10), 2)
