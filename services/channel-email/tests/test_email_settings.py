"""Email settings: the channel's own (from channel_settings_base) under the names operators
already use, SendGrid's and the sandbox's, and the providers the service builds from them."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from herald_channel_email.main import PROVIDERS
from herald_channel_email.sendgrid import SendgridProvider
from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import SmtpProvider
from herald_common.channel_service import build_providers
from herald_common.sandbox import SandboxProvider
from herald_common.schemas import EmailContent, EmailDelivery


def _names(directory: Path) -> list[str]:
    """The files in ``directory``, each by what follows its time stamp."""
    return [p.name[p.name.index("-") :] for p in directory.iterdir()]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)


def test_defaults_are_as_before() -> None:
    settings = EmailSettings()
    options = settings.channel_options()
    assert options.channel == "email"
    assert options.providers == ("smtp",)
    assert (settings.email_http_host, settings.email_http_port) == ("127.0.0.1", 8002)
    assert (options.http_host, options.http_port) == ("127.0.0.1", 8002)
    assert settings.email_sendgrid_api_key is None
    assert settings.email_sendgrid_base_url == "https://api.sendgrid.com"
    assert settings.email_sandbox_dir is None


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "HERALD_EMAIL_PROVIDERS": "sendgrid, smtp",
        "HERALD_EMAIL_SENDGRID_API_KEY": "SG.secret-key-value",
        "HERALD_EMAIL_SENDGRID_BASE_URL": "http://127.0.0.1:9100",
        "HERALD_EMAIL_SANDBOX_DIR": str(tmp_path),
        "HERALD_EMAIL_HTTP_HOST": "0.0.0.0",
        "HERALD_EMAIL_HTTP_PORT": "9002",
        "HERALD_EMAIL_SENDGRID_TIMEOUT": "3",
    }.items():
        monkeypatch.setenv(name, value)
    settings = EmailSettings()
    assert settings.email_providers == ["sendgrid", "smtp"]
    assert settings.email_sendgrid_api_key is not None
    assert settings.email_sendgrid_api_key.get_secret_value() == "SG.secret-key-value"
    assert settings.email_sendgrid_base_url == "http://127.0.0.1:9100"
    assert settings.email_sandbox_dir == tmp_path
    assert (settings.email_http_host, settings.email_http_port) == ("0.0.0.0", 9002)
    assert settings.provider_limits("sendgrid").timeout == 3
    assert "SG.secret-key-value" not in repr(settings)


def test_the_smtp_timeout_is_the_smtp_providers_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """HERALD_EMAIL_SMTP_TIMEOUT bounds the smtp send and each of its commands; unset, it is
    HERALD_PROVIDER_TIMEOUT, as for every provider."""
    monkeypatch.setenv("HERALD_PROVIDER_TIMEOUT", "7")
    assert EmailSettings().smtp_timeout == 7
    assert EmailSettings().provider_limits("smtp").timeout == 7
    monkeypatch.setenv("HERALD_EMAIL_SMTP_TIMEOUT", "2.5")
    assert EmailSettings().smtp_timeout == 2.5
    assert EmailSettings().provider_limits("smtp").timeout == 2.5


def test_an_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_EMAIL_PROVIDERS", "smtp,twilio")
    with pytest.raises(ValidationError, match="unknown: twilio"):
        EmailSettings()


def test_sendgrid_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_EMAIL_PROVIDERS", "smtp,sendgrid")
    with pytest.raises(ValidationError, match="needs HERALD_EMAIL_SENDGRID_API_KEY"):
        EmailSettings()


async def test_the_service_builds_the_providers_it_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HERALD_EMAIL_PROVIDERS", "sendgrid,smtp,sandbox")
    monkeypatch.setenv("HERALD_EMAIL_SENDGRID_API_KEY", "SG.key")
    monkeypatch.setenv("HERALD_EMAIL_SANDBOX_DIR", str(tmp_path))
    settings = EmailSettings()
    providers = build_providers(settings, settings.channel_options().providers, PROVIDERS)
    try:
        assert [type(p) for p in providers] == [SendgridProvider, SmtpProvider, SandboxProvider]
        delivery = EmailDelivery(
            id=uuid.uuid4(),
            to="ada@example.com",
            content=EmailContent(subject="Hello", text="hi"),
            created_at=datetime.now(UTC),
        )
        receipt = await providers[2].send(delivery)
        assert receipt.provider == "sandbox"
        assert _names(tmp_path) == [f"-{delivery.id}.json"]
    finally:
        for provider in providers:
            await provider.close()
