"""SMTP over TLS against real TLS servers (aiosmtpd) with a CA made for the test run.

The settings are contracts (``HERALD_EMAIL_SMTP_TLS``, ``_TLS_VERIFY``, ``_TLS_CA_FILE``); each test
checks what the relay saw (``Received.tls``), not only that the provider returned.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from herald_channel_email.settings import EmailSettings, SmtpTls
from herald_channel_email.smtp import SmtpProvider
from herald_common.errors import TransientError
from herald_common.schemas import EmailContent, EmailDelivery
from herald_common.worker import Receipt
from tests.support.smtp import Certificates, FakeSmtp, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def starttls_relay(certificates: Certificates) -> Iterator[FakeSmtp]:
    relay = FakeSmtp(tls_context=certificates.server_context()).start()
    yield relay
    relay.stop()


@pytest.fixture
def implicit_relay(certificates: Certificates) -> Iterator[FakeSmtp]:
    relay = FakeSmtp(tls_context=certificates.server_context(), implicit_tls=True).start()
    yield relay
    relay.stop()


def _settings(relay: FakeSmtp, **overrides: Any) -> EmailSettings:
    return EmailSettings(email_smtp_port=relay.port, email_smtp_timeout=5, **overrides)


async def _send(settings: EmailSettings) -> tuple[EmailDelivery, Receipt]:
    delivery = EmailDelivery(
        id=uuid.uuid4(),
        to="ada@example.com",
        content=EmailContent(subject="Hello", text="hi"),
        created_at=datetime.now(UTC),
    )
    provider = SmtpProvider(settings)
    try:
        async with provider.slot():
            async with asyncio.timeout(10):
                return delivery, await provider.send(delivery)
    finally:
        await provider.close()


async def _sent_with_tls(relay: FakeSmtp, settings: EmailSettings) -> bool:
    delivery, _ = await _send(settings)
    [received] = relay.by_id(str(delivery.id))
    return received.tls


async def test_opportunistic_upgrades_when_starttls_is_offered(
    starttls_relay: FakeSmtp, certificates: Certificates
) -> None:
    settings = _settings(starttls_relay, email_smtp_tls_ca_file=str(certificates.ca_file))
    assert settings.email_smtp_tls is SmtpTls.OPPORTUNISTIC  # the default
    assert await _sent_with_tls(starttls_relay, settings)


async def test_opportunistic_stays_plain_when_starttls_is_not_offered(
    fake_smtp: FakeSmtp,
) -> None:
    assert not await _sent_with_tls(fake_smtp, _settings(fake_smtp))


async def test_starttls_mode_sends_nothing_to_a_relay_not_offering_it(
    fake_smtp: FakeSmtp,
) -> None:
    with pytest.raises(TransientError, match="does not offer STARTTLS") as raised:
        await _send(_settings(fake_smtp, email_smtp_tls=SmtpTls.STARTTLS))
    assert not raised.value.maybe_delivered
    assert fake_smtp.received == []


async def test_starttls_mode_upgrades(starttls_relay: FakeSmtp, certificates: Certificates) -> None:
    settings = _settings(
        starttls_relay,
        email_smtp_tls=SmtpTls.STARTTLS,
        email_smtp_tls_ca_file=str(certificates.ca_file),
    )
    assert await _sent_with_tls(starttls_relay, settings)


async def test_none_stays_plain_even_when_starttls_is_offered(starttls_relay: FakeSmtp) -> None:
    settings = _settings(starttls_relay, email_smtp_tls=SmtpTls.NONE)
    assert not await _sent_with_tls(starttls_relay, settings)


async def test_implicit_tls(implicit_relay: FakeSmtp, certificates: Certificates) -> None:
    settings = _settings(
        implicit_relay,
        email_smtp_tls=SmtpTls.IMPLICIT,
        email_smtp_tls_ca_file=str(certificates.ca_file),
    )
    assert await _sent_with_tls(implicit_relay, settings)


@pytest.mark.parametrize("mode", [SmtpTls.OPPORTUNISTIC, SmtpTls.STARTTLS, SmtpTls.IMPLICIT])
async def test_an_untrusted_certificate_fails_transiently_with_what_to_do(
    starttls_relay: FakeSmtp, implicit_relay: FakeSmtp, mode: SmtpTls
) -> None:
    # No CA file: the system's store, which does not know the test CA.
    relay = implicit_relay if mode is SmtpTls.IMPLICIT else starttls_relay
    with pytest.raises(TransientError, match="certificate is not trusted") as raised:
        await _send(_settings(relay, email_smtp_tls=mode))
    assert "HERALD_EMAIL_SMTP_TLS_CA_FILE" in str(raised.value)
    assert not raised.value.maybe_delivered
    assert relay.received == []


@pytest.mark.parametrize("mode", [SmtpTls.OPPORTUNISTIC, SmtpTls.IMPLICIT])
async def test_without_verification_an_untrusted_certificate_is_accepted(
    starttls_relay: FakeSmtp, implicit_relay: FakeSmtp, mode: SmtpTls
) -> None:
    relay = implicit_relay if mode is SmtpTls.IMPLICIT else starttls_relay
    settings = _settings(relay, email_smtp_tls=mode, email_smtp_tls_verify=False)
    assert await _sent_with_tls(relay, settings)


async def test_login_happens_only_after_starttls(certificates: Certificates) -> None:
    # The relay offers AUTH only over TLS and takes mail only after it: a login before the
    # upgrade would fail, so a sent message proves the order.
    relay = FakeSmtp(tls_context=certificates.server_context(), credentials=("herald", "s3cret"))
    relay.start()
    login = {"email_smtp_username": "herald", "email_smtp_password": "s3cret"}
    trusted = {"email_smtp_tls_ca_file": str(certificates.ca_file)}
    try:
        assert await _sent_with_tls(relay, _settings(relay, **login, **trusted))
        with pytest.raises(TransientError, match="AUTH"):  # no AUTH offered in clear
            await _send(_settings(relay, **login, email_smtp_tls=SmtpTls.NONE))
        wrong = login | {"email_smtp_password": "guess"}
        with pytest.raises(TransientError, match="535"):  # the relay's or Herald's fault
            await _send(_settings(relay, **wrong, **trusted))
    finally:
        relay.stop()


def test_settings_are_read_from_their_variables(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TLS", "implicit")
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TLS_VERIFY", "false")
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TLS_CA_FILE", str(certificates.ca_file))
    settings = EmailSettings()
    assert settings.email_smtp_tls is SmtpTls.IMPLICIT
    assert settings.email_smtp_tls_verify is False
    assert settings.email_smtp_tls_ca_file == str(certificates.ca_file)
    assert "email_smtp_starttls" not in EmailSettings.model_fields  # replaced by the above


def test_bad_tls_settings_stop_the_service_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TLS", "always")
    with pytest.raises(ValidationError, match="opportunistic"):
        EmailSettings()
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TLS", "starttls")
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match="no such file"):
        EmailSettings()
