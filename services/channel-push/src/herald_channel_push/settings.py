"""Settings of the push channel service: the common channel settings plus FCM's and Web Push's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from herald_common.channel_settings import ChannelSettingsBase, channel_settings_base

from .service_account import ServiceAccount
from .vapid import load_vapid_key

if TYPE_CHECKING:
    _Base = ChannelSettingsBase
else:
    _Base = channel_settings_base(
        "push", http_port=8004, default_providers="sandbox", providers=("fcm", "webpush", "sandbox")
    )


class PushSettings(_Base):
    """The push channel service and its providers: FCM (HTTP v1) and Web Push (RFC 8030)."""

    # A rejected value is not repeated in the error: it may be the VAPID private key.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    push_fcm_credentials_file: Path | None = Field(
        default=None,
        description=(
            "Google service-account JSON key of the Firebase project (its `project_id`, "
            "`client_email`, `private_key`, `token_uri`); required when `fcm` is a provider."
        ),
    )
    push_fcm_base_url: str = Field(
        default="https://fcm.googleapis.com",
        pattern=r"^https?://\S+$",
        description=(
            "FCM HTTP v1 API root; messages go to `/v1/projects/<project_id>/messages:send`."
        ),
    )
    push_fcm_connections: int = Field(
        default=64, ge=1, description="FCM requests in flight at once (HTTP connections)."
    )
    push_webpush_vapid_private_key: SecretStr | None = Field(
        default=None,
        description=(
            "VAPID private key (RFC 8292): the raw 32-byte P-256 key in base64url, as "
            "`web-push generate-vapid-keys` prints it; its public key is the "
            "`applicationServerKey` browsers subscribe with. Required when `webpush` is a provider."
        ),
    )
    push_webpush_vapid_subject: str | None = Field(
        default=None,
        pattern=r"^(mailto:|https://)\S+$",
        description=(
            "Contact for push services, a `mailto:` or `https:` URL (the VAPID `sub` claim); "
            "required when `webpush` is a provider."
        ),
    )
    push_webpush_connections: int = Field(
        default=64, ge=1, description="Web Push requests in flight at once (HTTP connections)."
    )
    push_sandbox_dir: Path | None = Field(
        default=None,
        description="Directory the `sandbox` provider writes push notifications to; unset: none.",
    )

    @field_validator("push_fcm_credentials_file")
    @classmethod
    def _usable_credentials(cls, value: Path | None) -> Path | None:
        if value is not None:
            ServiceAccount.load(value)
        return value

    @field_validator("push_webpush_vapid_private_key")
    @classmethod
    def _usable_vapid_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            load_vapid_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _providers_configured(self) -> PushSettings:
        providers = self.channel_options().providers
        missing = []
        if "fcm" in providers and self.push_fcm_credentials_file is None:
            missing.append("HERALD_PUSH_FCM_CREDENTIALS_FILE")
        if "webpush" in providers:
            if self.push_webpush_vapid_private_key is None:
                missing.append("HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY")
            if self.push_webpush_vapid_subject is None:
                missing.append("HERALD_PUSH_WEBPUSH_VAPID_SUBJECT")
        if missing:
            raise ValueError(
                f"HERALD_PUSH_PROVIDERS={','.join(providers)} needs {', '.join(missing)}"
            )
        return self
