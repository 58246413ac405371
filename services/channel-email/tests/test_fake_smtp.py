"""FakeSmtp's slow relay and non-ASCII replies, and what the provider makes of them.

The end-to-end tests rely on both, so what they put on the wire is checked here, byte by byte.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import aiosmtplib
import pytest

from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import SmtpProvider
from herald_common.errors import PermanentError
from herald_common.schemas import EmailContent, EmailDelivery
from herald_common.text import safe_text
from tests.support.smtp import FakeSmtp

GERMAN_REFUSAL = "550 5.1.1 Empfänger unbekannt"


async def _reply_to_rcpt(port: int, recipient: str) -> bytes:
    """The raw line a relay answers RCPT with, read from a plain socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # greeting
        writer.write(b"EHLO client.test\r\n")
        while (await reader.readline())[3:4] == b"-":
            pass
        writer.write(b"MAIL FROM:<herald@example.com>\r\n")
        await reader.readline()
        writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
        return await reader.readline()
    finally:
        writer.close()


async def test_a_refusal_can_be_sent_in_latin_1(fake_smtp: FakeSmtp) -> None:
    fake_smtp.fail("max@example.de", GERMAN_REFUSAL, encoding="latin-1")
    assert await _reply_to_rcpt(fake_smtp.port, "max@example.de") == (
        b"550 5.1.1 Empf\xe4nger unbekannt\r\n"
    )
    fake_smtp.fail("ada@example.com", "550 5.1.1 no such user")  # no encoding: as before
    assert await _reply_to_rcpt(fake_smtp.port, "ada@example.com") == (
        b"550 5.1.1 no such user\r\n"
    )
    assert fake_smtp.refused[0][:2] == ("max@example.de", GERMAN_REFUSAL)


async def test_aiosmtplib_keeps_a_latin_1_byte_as_a_surrogate(fake_smtp: FakeSmtp) -> None:
    # It decodes replies as UTF-8 with surrogateescape: 0xE4 becomes U+DCE4, not "ä".
    fake_smtp.fail("max@example.de", GERMAN_REFUSAL, encoding="latin-1")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=fake_smtp.port, start_tls=False)
    await client.connect()
    try:
        await client.mail("herald@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as raised:
            await client.rcpt("max@example.de")
    finally:
        client.close()
    assert (raised.value.code, raised.value.message) == (550, "5.1.1 Empf\udce4nger unbekannt")


async def test_the_provider_reports_a_latin_1_refusal_readably(fake_smtp: FakeSmtp) -> None:
    fake_smtp.fail("max@example.de", GERMAN_REFUSAL, encoding="latin-1")
    provider = SmtpProvider(EmailSettings(email_smtp_port=fake_smtp.port))
    delivery = EmailDelivery(
        id=uuid.uuid4(),
        to="max@example.de",
        content=EmailContent(subject="Hallo", text="hi"),
        created_at=datetime.now(UTC),
    )
    try:
        async with provider.slot():
            with pytest.raises(PermanentError) as raised:
                await provider.send(delivery)
    finally:
        await provider.close()
    # The provider passes the relay's words on unchanged; the runtime stores safe_text of them.
    assert str(raised.value) == "recipient refused: 550 5.1.1 Empf\udce4nger unbekannt"
    assert safe_text(str(raised.value)) == "recipient refused: 550 5.1.1 Empfänger unbekannt"


async def test_a_slow_relay_records_the_message_then_answers_late(fake_smtp: FakeSmtp) -> None:
    fake_smtp.delay(0.5)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=fake_smtp.port, start_tls=False)
    await client.connect()
    try:
        started = time.monotonic()
        sending = asyncio.create_task(
            client.sendmail("herald@example.com", ["ada@example.com"], b"Subject: slow\r\n\r\nhi")
        )
        while not fake_smtp.received:  # recorded on arrival, while the reply is still due
            assert not sending.done()
            await asyncio.sleep(0.01)
        assert fake_smtp.in_data == 1
        await sending
        assert time.monotonic() - started >= 0.5
        assert fake_smtp.in_data == 0
    finally:
        client.close()
    assert len(fake_smtp.received) == 1
