"""The SMTP provider: MIME building, a small pool of reused connections, and error mapping.

SMTP 4xx replies and connection failures are transient; 5xx replies are permanent. A failure
after the message was sent (while waiting for the relay's reply to it) may have delivered it: it
is transient with ``maybe_delivered``. A connection that failed is closed and replaced, never
returned to the pool; one whose transaction was refused is reset (RSET) and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr

import aiosmtplib

from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailDelivery
from herald_common.worker import Receipt

from .session import SessionFailed, open_session, tls_context
from .settings import EmailSettings

NOTIFICATION_HEADER = "X-Herald-Notification-Id"


def build_message(delivery: EmailDelivery, sender: str) -> Message:
    """A MIME message: text, with the HTML as an alternative when given.

    Built with the compat32 ``email.mime`` classes: the modern ``EmailMessage`` API parses every
    header it is given and costs several milliseconds a mail, which caps a channel service
    at a few hundred mails a second.
    """
    domain = parseaddr(sender)[1].rpartition("@")[2] or "herald.local"
    text, html = delivery.content.text, delivery.content.html
    message: Message
    if text and html:
        # A boundary of our own: otherwise the generator makes a random one and compiles a regex
        # to check it against the whole body, a tenth of the service's time per mail. This one
        # cannot occur in the parts: utf-8 parts are base64, whose alphabet has no "_".
        message = MIMEMultipart("alternative", boundary=f"=_herald_{delivery.id.hex}")
        message.attach(MIMEText(text, "plain", "utf-8"))
        message.attach(MIMEText(html, "html", "utf-8"))
    else:
        message = MIMEText(text or html or "", "plain" if text else "html", "utf-8")
    message["From"] = _header(sender)
    message["To"] = str(delivery.to)
    message["Subject"] = _header(delivery.content.subject)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # Stable across retries, so a receiving system can recognise a repeated message.
    message["Message-ID"] = f"<{delivery.id}@{domain}>"
    message[NOTIFICATION_HEADER] = str(delivery.id)
    if delivery.correlation_id:
        message["X-Correlation-Id"] = delivery.correlation_id
    return message


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def data_block(message: bytes) -> bytes:
    """``message`` as sent after DATA (RFC 5321 4.5.2): CRLF line ends, a dot at the start of a
    line doubled so it cannot end the message early, and the closing ``.`` line."""
    text = _LINE_END.sub(b"\r\n", message)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    return _LEADING_DOT.sub(b"..", text) + b".\r\n"


class SmtpProvider:
    """Sends each email in an SMTP transaction of its own over one of a few reused connections.

    ``slot()`` bounds the connections to ``email_smtp_connections``; ``send`` runs inside a slot
    and takes an idle connection or opens one, so it never waits for the pool.
    """

    name = "smtp"

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._tls = tls_context(settings)
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.email_smtp_connections)
        self._envelope_sender = parseaddr(settings.email_from)[1]

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Waits (untimed) until fewer than ``email_smtp_connections`` sends are running."""
        return self._slots

    async def send(self, delivery: EmailDelivery) -> Receipt:
        """Send one email; call it inside ``slot()``, which is what bounds the connections."""
        message = build_message(delivery, self._settings.email_from)
        content = data_block(message.as_bytes())
        client = self._idle.pop() if self._idle else None
        if client is None or not client.is_connected:
            try:
                client = await open_session(self._settings, self._tls)
            except SessionFailed as exc:
                raise TransientError(str(exc), provider=self.name) from None
        transaction = _Transaction(client)
        try:
            await transaction.run(self._envelope_sender, str(delivery.to), content)
        except aiosmtplib.SMTPRecipientRefused as exc:
            await self._reset_or_close(client)
            detail = f"{exc.code} {exc.message}"
            if exc.code >= 500:
                raise PermanentError(f"recipient refused: {detail}", provider=self.name) from None
            # About this mailbox (full, greylisted), not the relay: the breaker must not open.
            raise TransientError(
                f"recipient deferred: {detail}", provider=self.name, provider_fault=False
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.code} {exc.message}"
            if exc.code >= 500:
                await self._reset_or_close(client)
                raise PermanentError(text, provider=self.name) from None
            if exc.code >= 400:
                await self._reset_or_close(client)
                raise TransientError(text, provider=self.name) from None
            # Not an SMTP error reply (a malformed or unexpected one): the dialogue is lost.
            _close(client)
            raise self._lost(text, transaction.handed_over) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            _close(client)
            raise self._lost(repr(exc), transaction.handed_over) from None
        except BaseException:
            _close(client)
            raise
        self._idle.append(client)
        return Receipt(provider=self.name, provider_message_id=str(message["Message-ID"]))

    def _lost(self, detail: str, handed_over: bool) -> TransientError:
        if handed_over:
            return TransientError(
                f"SMTP relay did not confirm the message after receiving it ({detail}); it may"
                " have been delivered",
                provider=self.name,
                maybe_delivered=True,
            )
        return TransientError(
            f"SMTP connection failed before the message was sent: {detail}", provider=self.name
        )

    async def _reset_or_close(self, client: aiosmtplib.SMTP) -> None:
        """Return a connection whose transaction the relay refused to the pool, reset."""
        if not client.is_connected:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            _close(client)
        else:
            self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.quit()


@dataclass
class _Transaction:
    """One email over one connection: MAIL, RCPT, DATA, then the message.

    aiosmtplib's ``sendmail`` and ``data`` hide how far they got; this records it, because a
    failure before the message was sent left nothing at the relay and one after may not have.
    """

    client: aiosmtplib.SMTP
    handed_over: bool = False
    """The message (after DATA's 354) was written: the relay may have accepted it."""

    async def run(self, sender: str, recipient: str, content: bytes) -> None:
        client = self.client
        await client.mail(sender)
        await client.rcpt(recipient)
        start = await client.execute_command(b"DATA")
        if start.code != aiosmtplib.SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost after DATA")
        protocol.write(content)
        self.handed_over = True
        # Awaited right after the write, as aiosmtplib's own data() does: the protocol ignores a
        # reply that arrives while none is awaited, and nothing can arrive before this await.
        reply = await protocol.read_response(timeout=client.timeout)
        if not 200 <= reply.code < 300:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        client.close()
