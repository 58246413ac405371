"""SMS settings come from their documented variables, and a wrong provider list or missing
credentials stop the service at start-up; the service's providers are built from them."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from herald_channel_sms.main import PROVIDERS
from herald_channel_sms.settings import SmsSettings
from herald_channel_sms.twilio import TwilioProvider
from herald_channel_sms.vonage import VonageProvider
from herald_common.channel_service import build_providers
from herald_common.sandbox import SandboxProvider
from herald_common.schemas import SmsContent, SmsDelivery

TWILIO = {
    "HERALD_SMS_TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "HERALD_SMS_TWILIO_AUTH_TOKEN": "twilio-token-value",
    "HERALD_SMS_TWILIO_FROM": "+15005550006",
}
VONAGE = {
    "HERALD_SMS_VONAGE_API_KEY": "abcd1234",
    "HERALD_SMS_VONAGE_API_SECRET": "vonage-secret-value",
    "HERALD_SMS_VONAGE_FROM": "Herald",
}


def _names(directory: Path) -> list[str]:
    """The files in ``directory``, each by what follows its time stamp."""
    return [p.name[p.name.index("-") :] for p in directory.iterdir()]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)


def _set(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_defaults_need_no_credentials() -> None:
    settings = SmsSettings()
    options = settings.channel_options()
    assert options.channel == "sms"
    assert options.providers == ("sandbox",)
    assert (options.http_host, options.http_port) == ("127.0.0.1", 8003)
    assert settings.sms_twilio_base_url == "https://api.twilio.com"
    assert settings.sms_vonage_base_url == "https://rest.nexmo.com"
    assert settings.sms_sandbox_dir is None


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _set(monkeypatch, TWILIO | VONAGE)
    _set(
        monkeypatch,
        {
            "HERALD_SMS_PROVIDERS": "vonage, twilio,sandbox",
            "HERALD_SMS_TWILIO_BASE_URL": "http://127.0.0.1:9001",
            "HERALD_SMS_VONAGE_BASE_URL": "http://127.0.0.1:9002/",
            "HERALD_SMS_SANDBOX_DIR": str(tmp_path / "sms"),
            "HERALD_SMS_HTTP_PORT": "9003",
            "HERALD_SMS_TWILIO_TIMEOUT": "4.5",
            "HERALD_SMS_RETRY_DELAYS": "2,20",
        },
    )
    settings = SmsSettings()
    assert settings.sms_providers == ["vonage", "twilio", "sandbox"]
    assert settings.sms_twilio_account_sid == "AC" + "a" * 32
    assert settings.sms_twilio_auth_token is not None
    assert settings.sms_twilio_auth_token.get_secret_value() == "twilio-token-value"
    assert settings.sms_twilio_from == "+15005550006"
    assert settings.sms_twilio_base_url == "http://127.0.0.1:9001"
    assert settings.sms_vonage_api_key == "abcd1234"
    assert settings.sms_vonage_api_secret is not None
    assert settings.sms_vonage_api_secret.get_secret_value() == "vonage-secret-value"
    assert settings.sms_vonage_from == "Herald"
    assert settings.sms_vonage_base_url == "http://127.0.0.1:9002/"
    assert settings.sms_sandbox_dir == tmp_path / "sms"
    assert settings.channel_options().http_port == 9003
    assert settings.channel_options().retry_policy.delays == (2, 20)
    assert settings.provider_limits("twilio").timeout == 4.5
    # Secrets stay out of anything that might be logged.
    assert "twilio-token-value" not in repr(settings)
    assert "vonage-secret-value" not in repr(settings)


def test_an_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SMS_PROVIDERS", "twilio,smtp")
    _set(monkeypatch, TWILIO)
    with pytest.raises(ValidationError, match="unknown: smtp"):
        SmsSettings()
    monkeypatch.setenv("HERALD_SMS_PROVIDERS", "")
    with pytest.raises(ValidationError, match="one or more of twilio, vonage, sandbox"):
        SmsSettings()


@pytest.mark.parametrize(
    ("provider", "given", "missing"),
    [
        ("twilio", {}, "HERALD_SMS_TWILIO_ACCOUNT_SID, HERALD_SMS_TWILIO_AUTH_TOKEN"),
        ("twilio", {"HERALD_SMS_TWILIO_ACCOUNT_SID": "AC1"}, "HERALD_SMS_TWILIO_AUTH_TOKEN"),
        ("vonage", {"HERALD_SMS_VONAGE_API_KEY": "k"}, "HERALD_SMS_VONAGE_API_SECRET"),
    ],
)
def test_a_provider_without_its_credentials_is_refused(
    monkeypatch: pytest.MonkeyPatch, provider: str, given: dict[str, str], missing: str
) -> None:
    monkeypatch.setenv("HERALD_SMS_PROVIDERS", provider)
    _set(monkeypatch, given)
    with pytest.raises(ValidationError, match=f"sms provider {provider} needs {missing}"):
        SmsSettings()


def test_a_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SMS_TWILIO_BASE_URL", "api.twilio.com")
    with pytest.raises(ValidationError, match="sms_twilio_base_url"):
        SmsSettings()


async def test_the_service_builds_the_providers_it_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _set(monkeypatch, TWILIO | VONAGE)
    monkeypatch.setenv("HERALD_SMS_PROVIDERS", "vonage,twilio,sandbox")
    monkeypatch.setenv("HERALD_SMS_SANDBOX_DIR", str(tmp_path))
    settings = SmsSettings()
    providers = build_providers(settings, settings.channel_options().providers, PROVIDERS)
    try:
        assert [type(p) for p in providers] == [VonageProvider, TwilioProvider, SandboxProvider]
        assert [p.name for p in providers] == ["vonage", "twilio", "sandbox"]
        delivery = SmsDelivery(
            id=uuid.uuid4(),
            to="+447700900123",
            content=SmsContent(text="hi"),
            created_at=datetime.now(UTC),
        )
        await providers[2].send(delivery)
        assert _names(tmp_path) == [f"-{delivery.id}.json"]
    finally:
        for provider in providers:
            await provider.close()
