"""The SMTP provider: MIME building, a small pool of reused connections, and error mapping.

SMTP 4xx replies and connection failures are transient; 5xx replies are permanent. A connection
that failed is closed and replaced, never returned to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr

import aiosmtplib

from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailDelivery
from herald_common.worker import Receipt

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
        message = MIMEMultipart("alternative")
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


class SmtpProvider:
    name = "smtp"

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.email_smtp_connections)
        self._envelope_sender = parseaddr(settings.email_from)[1]

    async def _open(self) -> aiosmtplib.SMTP:
        s = self._settings
        client = aiosmtplib.SMTP(
            hostname=s.email_smtp_host,
            port=s.email_smtp_port,
            timeout=s.email_smtp_timeout,
            start_tls=s.email_smtp_starttls,
            username=s.email_smtp_username,
            password=s.email_smtp_password.get_secret_value() if s.email_smtp_password else None,
        )
        await client.connect()
        return client

    async def send(self, delivery: EmailDelivery) -> Receipt:
        message = build_message(delivery, self._settings.email_from)
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            try:
                if client is None or not client.is_connected:
                    client = await self._open()
                await client.sendmail(self._envelope_sender, [str(delivery.to)], message.as_bytes())
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._release(client)
                codes = [r.code for r in exc.recipients]
                detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
                if all(code >= 500 for code in codes):
                    raise PermanentError(
                        f"recipient refused: {detail}", provider=self.name
                    ) from None
                raise TransientError(f"recipient deferred: {detail}", provider=self.name) from None
            except aiosmtplib.SMTPResponseException as exc:
                # The transaction failed but the connection may be fine; reset before reuse.
                await self._reset_or_close(client)
                text = f"SMTP {exc.code} {exc.message}"
                if exc.code >= 500:
                    raise PermanentError(text, provider=self.name) from None
                raise TransientError(text, provider=self.name) from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await _close(client)
                raise TransientError(
                    f"SMTP connection failed: {exc!r}", provider=self.name
                ) from None
            except BaseException:
                await _close(client)
                raise
            self._release(client)
        return Receipt(provider=self.name, provider_message_id=str(message["Message-ID"]))

    def _release(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None and client.is_connected:
            self._idle.append(client)

    async def _reset_or_close(self, client: aiosmtplib.SMTP | None) -> None:
        if client is None or not client.is_connected:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await _close(client)
        else:
            self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.quit()


async def _close(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
