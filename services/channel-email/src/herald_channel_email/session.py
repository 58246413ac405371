"""Opening a connection to the SMTP relay: greeting, TLS as configured, then login.

A failure here is about the relay or Herald's configuration, never about one email, and nothing
of the email has been sent yet: it is a ``SessionFailed``, which the provider reports as a
transient error so the email waits for a retry instead of being dead-lettered.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from .settings import EmailSettings, SmtpTls


class SessionFailed(Exception):
    """The relay could not be reached, would not talk TLS as required, or refused the login."""


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    """The client TLS context the settings ask for; ``None`` when TLS is off."""
    if settings.email_smtp_tls is SmtpTls.NONE:
        return None
    # A CA file replaces the system's store rather than adding to it, as with curl's --cacert.
    context = ssl.create_default_context(cafile=settings.email_smtp_tls_ca_file)
    if not settings.email_smtp_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def open_session(settings: EmailSettings, context: ssl.SSLContext | None) -> aiosmtplib.SMTP:
    """A connected client, encrypted as ``email_smtp_tls`` says and logged in when configured.

    Raises ``SessionFailed`` with a message naming the relay and, for TLS, the setting to look at.
    """
    mode = settings.email_smtp_tls
    client = aiosmtplib.SMTP(
        hostname=settings.email_smtp_host,
        port=settings.email_smtp_port,
        timeout=settings.smtp_timeout,
        use_tls=mode is SmtpTls.IMPLICIT,
        # STARTTLS and login are done here rather than by connect(): given a username, connect()
        # logs in before a STARTTLS it was not told to require, sending the password in clear.
        start_tls=False,
        tls_context=context,
    )
    where = f"{settings.email_smtp_host}:{settings.email_smtp_port}"
    try:
        await client.connect()
        if mode in (SmtpTls.OPPORTUNISTIC, SmtpTls.STARTTLS):
            await _start_tls(client, required=mode is SmtpTls.STARTTLS, where=where)
        if settings.email_smtp_username is not None:
            password = settings.email_smtp_password
            await client.login(
                settings.email_smtp_username, password.get_secret_value() if password else ""
            )
    except SessionFailed:
        client.close()
        raise
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        client.close()
        raise SessionFailed(_describe(exc, where)) from exc
    except BaseException:
        client.close()
        raise
    return client


async def _start_tls(client: aiosmtplib.SMTP, *, required: bool, where: str) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if required or not client.is_connected:
            raise
        return  # a relay without ESMTP offers no STARTTLS; MAIL falls back to HELO
    if client.supports_extension("starttls"):
        await client.starttls()
    elif required:
        raise SessionFailed(
            f"the SMTP relay {where} does not offer STARTTLS, which HERALD_EMAIL_SMTP_TLS=starttls"
            " requires; nothing was sent"
        )


def _describe(exc: BaseException, where: str) -> str:
    cause = _tls_error(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS with the SMTP relay {where} failed: its certificate is not trusted "
            f"({cause.verify_message}); trust its CA with HERALD_EMAIL_SMTP_TLS_CA_FILE, or set "
            "HERALD_EMAIL_SMTP_TLS_VERIFY=false on a trusted network"
        )
    if cause is not None:
        return f"TLS with the SMTP relay {where} failed: {cause}"
    return f"SMTP connection to {where} failed: {exc!r}"


def _tls_error(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind ``exc``: aiosmtplib wraps those of an implicit-TLS connect."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
