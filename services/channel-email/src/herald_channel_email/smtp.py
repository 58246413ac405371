"""The SMTP provider: a small pool of reused connections, PIPELINING, and error mapping.

SMTP 4xx replies and connection failures are transient; 5xx replies are permanent. A failure
after the message was sent (while waiting for the relay's reply to it) may have delivered it: it
is transient with ``maybe_delivered``. A connection that failed is closed and replaced, never
returned to the pool; one whose transaction was refused is reset (RSET) and reused.

The message itself is written by ``mime.MimeWriter``; ``build_message`` is the standard library's
rendering of the same mail, kept for the benchmark's reference loop and for the tests that compare
the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import SMTPProtocol

from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailDelivery
from herald_common.worker import Receipt

from .mime import NOTIFICATION_HEADER, MimeWriter
from .session import SessionFailed, open_session, tls_context
from .settings import EmailSettings


def build_message(delivery: EmailDelivery, sender: str) -> Message:
    """The mail as the standard library's ``email.mime`` classes build it: text, with the HTML as
    an alternative when given. The provider sends ``MimeWriter``'s bytes instead (the same headers
    and bodies, at a fraction of the cost); this stays as the reference the benchmark's bare loop
    sends (``bench/scenarios.py``) and the tests compare against.
    """
    domain = parseaddr(sender)[1].rpartition("@")[2] or "herald.local"
    text, html = delivery.content.text, delivery.content.html
    message: Message
    if text and html:
        # A boundary of our own: otherwise the generator makes a random one and compiles a regex
        # to check it against the whole body. This one cannot occur in the parts: utf-8 parts are
        # base64, whose alphabet has no "_".
        message = MIMEMultipart("alternative", boundary=f"=_herald_{delivery.id.hex}")
        message.attach(MIMEText(text, "plain", "utf-8"))
        message.attach(MIMEText(html, "html", "utf-8"))
    else:
        message = MIMEText(text or html or "", "plain" if text else "html", "utf-8")
    message["From"] = _header(sender)
    message["To"] = str(delivery.to)
    message["Subject"] = _header(delivery.content.subject)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = f"<{delivery.id}@{domain}>"
    message[NOTIFICATION_HEADER] = str(delivery.id)
    if delivery.correlation_id:
        message["X-Correlation-Id"] = delivery.correlation_id
    return message


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


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
        self._writer = MimeWriter(settings.email_from)

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Waits (untimed) until fewer than ``email_smtp_connections`` sends are running."""
        return self._slots

    async def send(self, delivery: EmailDelivery) -> Receipt:
        """Send one email; call it inside ``slot()``, which is what bounds the connections."""
        content = self._writer.data_block(delivery)
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
        return Receipt(provider=self.name, provider_message_id=self._writer.message_id(delivery))

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

    When the relay advertises PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and their
    three replies are read in order: two round trips a mail instead of four. The errors are those
    of the command-by-command dialogue (the first refused command's), so the provider maps both
    alike.

    aiosmtplib's ``sendmail`` and ``data`` hide how far they got; this records it, because a
    failure before the message was sent left nothing at the relay and one after may not have.
    """

    client: aiosmtplib.SMTP
    handed_over: bool = False
    """The message (after DATA's 354) was written: the relay may have accepted it."""

    async def run(self, sender: str, recipient: str, content: bytes) -> None:
        client = self.client
        await _greet(client)
        if client.supports_extension("pipelining"):
            await self._pipelined_envelope(sender, recipient)
        else:
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

    async def _pipelined_envelope(self, sender: str, recipient: str) -> None:
        """MAIL, RCPT and DATA in one write; returns once DATA's 354 came after two 250s.

        Otherwise raises what ``mail()``, ``rcpt()`` or the DATA command would have raised for
        the first refusal, after reading every reply, so the connection stays in step for RSET. A
        relay that answers DATA with 354 all the same gets an empty message (RFC 2920 3.1), which
        it may not deliver, having no valid recipient.
        """
        client = self.client
        protocol = client.protocol
        lock = protocol._command_lock if protocol is not None else None
        if protocol is None or lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        mail = quote_address(sender).encode("ascii")  # as mail() and rcpt() encode them
        rcpt = quote_address(recipient).encode("ascii")
        if _COMMAND_INJECTION.search(mail) or _COMMAND_INJECTION.search(rcpt):
            raise ValueError("Command arg contains a prohibited control character")
        refusal: aiosmtplib.SMTPResponseException | None = None
        async with lock, _PipelinedReplies(protocol) as replies:
            protocol.write(b"MAIL FROM:" + mail + b"\r\nRCPT TO:" + rcpt + b"\r\nDATA\r\n")
            for command in (b"MAIL", b"RCPT", b"DATA"):
                try:
                    reply = await replies.read(client.timeout)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    if refusal is None:
                        raise
                    client.close()  # out of step: no RSET on this connection
                    raise refusal from None
                refusal = refusal or _refusal(command, reply, sender, recipient)
                if reply.code == aiosmtplib.SMTPStatus.domain_unavailable:
                    client.close()  # 421: the relay is closing it (as execute_command does)
                    assert refusal is not None
                    raise refusal
        if refusal is None:
            return
        if reply.code == aiosmtplib.SMTPStatus.start_input:
            try:
                protocol.write(b".\r\n")
                await protocol.read_response(timeout=client.timeout)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
        raise refusal


def _refusal(
    command: bytes, reply: aiosmtplib.SMTPResponse, sender: str, recipient: str
) -> aiosmtplib.SMTPResponseException | None:
    """What aiosmtplib raises for ``reply`` to ``command`` (``mail()``, ``rcpt()``, or the DATA
    command as ``run`` checks it), or None when the reply lets the transaction go on."""
    code, message = reply
    if command == b"MAIL":
        if code == aiosmtplib.SMTPStatus.completed:
            return None
        return aiosmtplib.SMTPSenderRefused(code, message, sender)
    if command == b"RCPT":
        if code in (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward):
            return None
        return aiosmtplib.SMTPRecipientRefused(code, message, recipient)
    if code == aiosmtplib.SMTPStatus.start_input:
        return None
    return aiosmtplib.SMTPDataError(code, message)


_COMMAND_INJECTION = re.compile(rb"[\x00-\x1f\x7f]")
"""What aiosmtplib's ``execute_command`` refuses in a command's arguments."""

_MAX_REPLY = 32768
"""Bytes a reply may take, continuation lines included (aiosmtplib's limit too)."""


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO (HELO for a relay without ESMTP) once per connection, as ``mail()`` does first: the
    extensions listed in the reply say whether the relay takes pipelined commands."""
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()


class _PipelinedReplies(asyncio.Protocol):
    """Takes the connection's incoming data from aiosmtplib's protocol while replies to pipelined
    commands arrive, and gives it back when they are read.

    aiosmtplib (5.x) reads one reply per command: it parses one reply per chunk received and
    drops what arrives while a parsed reply waits to be picked up, so of several replies arriving
    together all but the first would be lost (the next read would time out). This parses every
    complete reply into a queue. Whatever else happens to the connection meanwhile (closed, EOF,
    write flow control) is passed on to aiosmtplib's protocol, which stays the owner.
    """

    def __init__(self, protocol: SMTPProtocol) -> None:
        transport = protocol.transport
        if transport is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._protocol = protocol
        self._transport = transport
        self._buffer = bytearray()
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> _PipelinedReplies:
        self._transport.set_protocol(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._transport.set_protocol(self._protocol)
        if (self._buffer or self._replies) and exc_info[0] is None:
            # More than the replies awaited: the dialogue is out of step.
            raise aiosmtplib.SMTPResponseException(
                aiosmtplib.SMTPStatus.invalid_response, "unexpected data after the replies"
            )

    async def read(self, timeout: float | None) -> aiosmtplib.SMTPResponse:
        """The next reply, waiting at most ``timeout`` seconds for it."""
        if not self._replies and self._failure is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._waiter = None
        if self._replies:
            return self._replies.popleft()
        assert self._failure is not None
        raise self._failure

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._buffer += data
        try:
            while (reply := _take_reply(self._buffer)) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self._failure = exc
        if self._replies or self._failure is not None:
            self._wake()

    def eof_received(self) -> bool:
        self._failure = self._failure or aiosmtplib.SMTPServerDisconnected(
            "Unexpected EOF received"
        )
        self._wake()
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        failure = aiosmtplib.SMTPServerDisconnected("Connection lost")
        failure.__cause__ = exc
        self._failure = self._failure or failure
        self._wake()
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


def _take_reply(buffer: bytearray) -> aiosmtplib.SMTPResponse | None:
    """Remove the first complete reply from ``buffer`` and return it (lines as aiosmtplib joins
    them); None while it is incomplete."""
    offset = 0
    lines: list[bytes] = []
    while (end := buffer.find(b"\n", offset)) != -1:
        line = bytes(buffer[offset : end + 1])
        try:
            code = int(line[:3])
        except ValueError:
            raise aiosmtplib.SMTPResponseException(
                aiosmtplib.SMTPStatus.invalid_response,
                "Malformed SMTP response line: " + line.decode("utf-8", errors="ignore"),
            ) from None
        offset = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            message = b"\n".join(lines).decode("utf-8", "surrogateescape")
            return aiosmtplib.SMTPResponse(code, message)
    if len(buffer) > _MAX_REPLY:
        raise aiosmtplib.SMTPResponseException(
            aiosmtplib.SMTPStatus.invalid_response, "Response too long"
        )
    return None


def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        client.close()
