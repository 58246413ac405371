"""The push service's settings: the environment names operators use, and clear start-up errors."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from herald_channel_push.main import PROVIDERS
from herald_channel_push.settings import PushSettings
from herald_common.sandbox import SandboxProvider


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)


def test_defaults_need_nothing_but_the_sandbox() -> None:
    settings = PushSettings()
    options = settings.channel_options()
    assert options.channel == "push"
    assert options.providers == ("sandbox",)
    assert options.http_port == 8004
    assert settings.push_fcm_base_url == "https://fcm.googleapis.com"
    assert settings.push_sandbox_dir is None


def test_environment_names(
    monkeypatch: pytest.MonkeyPatch,
    credentials_file: Path,
    vapid_keys: tuple[str, str],
    tmp_path: Path,
) -> None:
    environment = {
        "HERALD_PUSH_PROVIDERS": "fcm, webpush,sandbox",
        "HERALD_PUSH_FCM_CREDENTIALS_FILE": str(credentials_file),
        "HERALD_PUSH_FCM_BASE_URL": "http://127.0.0.1:9999",
        "HERALD_PUSH_FCM_TIMEOUT": "2.5",
        "HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY": vapid_keys[0],
        "HERALD_PUSH_WEBPUSH_VAPID_SUBJECT": "https://herald.example/contact",
        "HERALD_PUSH_WEBPUSH_TIMEOUT": "4",
        "HERALD_PUSH_SANDBOX_DIR": str(tmp_path / "push"),
        "HERALD_PUSH_HTTP_PORT": "9104",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = PushSettings()
    assert settings.channel_options().providers == ("fcm", "webpush", "sandbox")
    assert settings.channel_options().http_port == 9104
    assert settings.push_fcm_credentials_file == credentials_file
    assert settings.push_fcm_base_url == "http://127.0.0.1:9999"
    assert settings.provider_limits("fcm").timeout == 2.5
    assert settings.provider_limits("webpush").timeout == 4
    assert settings.push_webpush_vapid_private_key is not None
    assert settings.push_webpush_vapid_private_key.get_secret_value() == vapid_keys[0]
    assert settings.push_webpush_vapid_subject == "https://herald.example/contact"
    assert settings.push_sandbox_dir == tmp_path / "push"
    assert vapid_keys[0] not in repr(settings)


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        (base64.urlsafe_b64encode(b"\x01" * 16).decode(), "this is 16 bytes"),
        (base64.urlsafe_b64encode(b"\x01" * 33).decode(), "this is 33 bytes"),
        ("not base64url!", "not base64url"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----", "not PEM"),
        (base64.urlsafe_b64encode(b"\x00" * 32).decode(), "in range"),
    ],
)
def test_a_vapid_key_that_is_not_32_bytes_of_base64url_is_a_clear_error(
    key: str, complaint: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        PushSettings(
            push_providers="webpush",
            push_webpush_vapid_private_key=key,
            push_webpush_vapid_subject="mailto:ops@herald.example",
        )
    text = str(caught.value)
    assert "push_webpush_vapid_private_key" in text
    assert complaint in text
    assert "32-byte P-256 private key in base64url" in text or complaint == "in range"
    assert key not in text, "the rejected key must not reach the logs"


def test_a_padded_vapid_key_is_accepted(vapid_keys: tuple[str, str]) -> None:
    padded = vapid_keys[0] + "="
    settings = PushSettings(
        push_providers="webpush",
        push_webpush_vapid_private_key=padded,
        push_webpush_vapid_subject="mailto:ops@herald.example",
    )
    assert settings.push_webpush_vapid_private_key is not None


@pytest.mark.parametrize("subject", ["ops@herald.example", "http://herald.example", "mailto:"])
def test_the_vapid_subject_is_a_mailto_or_https_url(
    subject: str, vapid_keys: tuple[str, str]
) -> None:
    with pytest.raises(ValidationError, match="push_webpush_vapid_subject"):
        PushSettings(
            push_providers="webpush",
            push_webpush_vapid_private_key=vapid_keys[0],
            push_webpush_vapid_subject=subject,
        )


def test_a_provider_without_its_credentials_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="needs HERALD_PUSH_FCM_CREDENTIALS_FILE"):
        PushSettings(push_providers="fcm")
    with pytest.raises(
        ValidationError,
        match="needs HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY, HERALD_PUSH_WEBPUSH_VAPID_SUBJECT",
    ):
        PushSettings(push_providers="webpush,sandbox")


def test_a_credentials_file_that_is_no_service_account_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        PushSettings(push_providers="fcm", push_fcm_credentials_file=tmp_path / "missing.json")
    (tmp_path / "user.json").write_text('{"type": "authorized_user", "client_id": "x"}')
    with pytest.raises(ValidationError, match="not a service-account key"):
        PushSettings(push_providers="fcm", push_fcm_credentials_file=tmp_path / "user.json")
    (tmp_path / "broken.json").write_text(
        '{"type": "service_account", "project_id": "p", "client_email": "a@b", '
        '"private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"}'
    )
    with pytest.raises(ValidationError, match=r"private_key of .* does not load"):
        PushSettings(push_providers="fcm", push_fcm_credentials_file=tmp_path / "broken.json")


def test_main_builds_each_provider(
    credentials_file: Path, vapid_keys: tuple[str, str], tmp_path: Path
) -> None:
    settings = PushSettings(
        push_providers="fcm,webpush,sandbox",
        push_fcm_credentials_file=credentials_file,
        push_webpush_vapid_private_key=vapid_keys[0],
        push_webpush_vapid_subject="mailto:ops@herald.example",
        push_sandbox_dir=tmp_path / "sandbox",
    )
    assert set(PROVIDERS) == {"fcm", "webpush", "sandbox"}
    built = {name: factory(settings) for name, factory in PROVIDERS.items()}
    assert {name: provider.name for name, provider in built.items()} == {
        "fcm": "fcm",
        "webpush": "webpush",
        "sandbox": "sandbox",
    }
    sandbox = built["sandbox"]
    assert isinstance(sandbox, SandboxProvider)
    assert sandbox.channel == "push"
    assert sandbox.directory == tmp_path / "sandbox"
