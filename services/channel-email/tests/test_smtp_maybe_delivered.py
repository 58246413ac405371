"""Which SMTP failures may have delivered the message: only those after the message was sent.

A relay stalling or hanging up while Herald waits for its reply to the message itself may have
accepted it (``maybe_delivered``); anywhere earlier it has nothing. A scripted relay (a small
asyncio server) stalls, hangs up or answers at each step; FakeSmtp shows the slow-relay case.
Every scripted case runs twice: with a relay that advertises PIPELINING (MAIL, RCPT and DATA come
in one write) and with one that does not.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import SmtpProvider
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailContent, EmailDelivery
from herald_common.worker import Receipt
from tests.support.smtp import FakeSmtp

TIMEOUT = 0.5
"""HERALD_EMAIL_SMTP_TIMEOUT of these tests: how long a stall lasts before the provider gives up."""

CONTENT = "content"
"""The step after the message was sent: waiting for the relay's reply to it."""

PIPELINING_EHLO = "250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME"

DEFAULT_REPLIES = {
    "greeting": "220 relay.test ESMTP",
    "EHLO": "250-relay.test\r\n250 8BITMIME",
    "MAIL": "250 2.1.0 OK",
    "RCPT": "250 2.1.5 OK",
    "DATA": "354 go ahead",
    CONTENT: "250 2.0.0 queued",
    "RSET": "250 OK",
    "NOOP": "250 OK",
    "QUIT": "221 bye",
}


@dataclass
class ScriptedRelay:
    """An SMTP server that answers each step from ``replies``, stalls at ``stall`` or closes the
    connection at ``hang_up`` (a step: "greeting", an SMTP verb, or ``CONTENT``)."""

    stall: str | None = None
    hang_up: str | None = None
    replies: dict[str, str] = field(default_factory=dict)
    messages: int = 0
    contents: list[bytes] = field(default_factory=list)
    """Each message's lines as received (dot-stuffed, CRLF), without the closing dot."""
    pipelined: list[bool] = field(default_factory=list)
    """For each MAIL: whether RCPT had already arrived with it."""
    _server: asyncio.Server | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()

    def _reply(self, step: str) -> str:
        return self.replies.get(step, DEFAULT_REPLIES.get(step, "500 5.5.1 unknown command"))

    async def _step(self, step: str, writer: asyncio.StreamWriter) -> bool:
        """Answer ``step``; False when the session is over."""
        if step == self.stall:
            await self._released.wait()
            return False
        if step == self.hang_up:
            return False
        writer.write(self._reply(step).encode() + b"\r\n")
        await writer.drain()
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not await self._step("greeting", writer):
                return
            while line := await reader.readline():
                verb = line.split(b" ")[0].strip().decode().upper()
                if verb == "MAIL":
                    self.pipelined.append(b"RCPT" in reader._buffer)  # type: ignore[attr-defined]
                if not await self._step(verb, writer):
                    return
                if verb == "DATA" and self._reply("DATA").startswith("354"):
                    content = b""
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        content += data
                    self.contents.append(content)
                    self.messages += 1
                    if not await self._step(CONTENT, writer):
                        return
        finally:
            writer.close()


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
async def relay_provider(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ScriptedRelay, SmtpProvider]]:
    relay = ScriptedRelay()
    if request.param:
        relay.replies["EHLO"] = PIPELINING_EHLO
    settings = EmailSettings(email_smtp_port=await relay.start(), email_smtp_timeout=TIMEOUT)
    provider = SmtpProvider(settings)
    yield relay, provider
    await provider.close()
    await relay.stop()


def _delivery() -> EmailDelivery:
    return EmailDelivery(
        id=uuid.uuid4(),
        to="ada@example.com",
        content=EmailContent(subject="Hello", text="hi"),
        created_at=datetime.now(UTC),
    )


async def _send(provider: SmtpProvider) -> Receipt:
    async with provider.slot():
        async with asyncio.timeout(10):
            return await provider.send(_delivery())


@pytest.mark.parametrize(
    ("stall", "hang_up", "maybe_delivered"),
    [
        ("greeting", None, False),
        ("EHLO", None, False),
        ("MAIL", None, False),
        ("RCPT", None, False),
        ("DATA", None, False),
        (CONTENT, None, True),
        (None, "RCPT", False),
        (None, "DATA", False),
        (None, CONTENT, True),
    ],
)
async def test_only_a_failure_after_the_message_was_sent_may_have_delivered_it(
    relay_provider: tuple[ScriptedRelay, SmtpProvider],
    stall: str | None,
    hang_up: str | None,
    maybe_delivered: bool,
) -> None:
    relay, provider = relay_provider
    relay.stall, relay.hang_up = stall, hang_up
    with pytest.raises(TransientError) as raised:
        await _send(provider)
    assert raised.value.maybe_delivered is maybe_delivered, str(raised.value)
    assert relay.messages == (1 if maybe_delivered else 0)
    assert relay.pipelined == ([_pipelining(relay)] if stall not in ("greeting", "EHLO") else [])
    if maybe_delivered:
        assert "may have been delivered" in str(raised.value)


@pytest.mark.parametrize(
    ("step", "reply", "error"),
    [
        ("MAIL", "451 4.3.0 try later", TransientError),
        ("MAIL", "550 5.7.1 sender not allowed", PermanentError),
        ("DATA", "451 4.3.0 try later", TransientError),
        ("DATA", "554 5.5.1 no valid recipients", PermanentError),
        (CONTENT, "452 4.3.1 out of storage", TransientError),
        (CONTENT, "554 5.6.0 message rejected", PermanentError),
    ],
)
async def test_a_refusal_is_an_answer_never_a_maybe(
    relay_provider: tuple[ScriptedRelay, SmtpProvider],
    step: str,
    reply: str,
    error: type[Exception],
) -> None:
    relay, provider = relay_provider
    relay.replies[step] = reply
    with pytest.raises(error, match=reply.split()[0]) as raised:
        await _send(provider)
    assert not getattr(raised.value, "maybe_delivered", False)
    if step == CONTENT:
        assert len(relay.contents) == 1
    elif step == "MAIL" and _pipelining(relay):
        # DATA was accepted all the same (this relay answers every command as scripted): the
        # client ended the data at once (RFC 2920 3.1), sending nothing of the message.
        assert relay.contents == [b""]
    else:
        assert relay.contents == []
    del relay.replies[step]
    await _send(provider)  # the connection was reset and works on
    assert relay.pipelined == [_pipelining(relay)] * 2


def _pipelining(relay: ScriptedRelay) -> bool:
    return relay.replies.get("EHLO") == PIPELINING_EHLO


async def test_a_slow_relay_has_the_message_when_the_provider_gives_up(
    fake_smtp: FakeSmtp,
) -> None:
    fake_smtp.delay(2)
    settings = EmailSettings(email_smtp_port=fake_smtp.port, email_smtp_timeout=TIMEOUT)
    provider = SmtpProvider(settings)
    delivery = _delivery()
    try:
        async with provider.slot():
            with pytest.raises(TransientError) as raised:
                await provider.send(delivery)
    finally:
        await provider.close()
    assert raised.value.maybe_delivered
    assert fake_smtp.counts()[str(delivery.id)] == 1  # recorded before the stall
