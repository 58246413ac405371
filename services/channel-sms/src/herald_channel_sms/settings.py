"""The SMS channel service's settings: the channel's own (``channel_settings_base``) and its
providers' credentials, numbers and API addresses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, model_validator

from herald_common.channel_settings import ChannelSettingsBase, channel_settings_base

if TYPE_CHECKING:
    _Base = ChannelSettingsBase
else:
    _Base = channel_settings_base(
        "sms",
        http_port=8003,
        default_providers="sandbox",
        providers=("twilio", "vonage", "sandbox"),
    )

BASE_URL = r"^https?://[^\s/]+(/\S*)?$"

REQUIRED: dict[str, tuple[str, ...]] = {
    "twilio": ("sms_twilio_account_sid", "sms_twilio_auth_token", "sms_twilio_from"),
    "vonage": ("sms_vonage_api_key", "sms_vonage_api_secret", "sms_vonage_from"),
}
"""Settings a provider cannot send without, checked when it is in ``HERALD_SMS_PROVIDERS``."""


class SmsSettings(_Base):
    """The SMS channel service and its providers: Twilio, Vonage and the sandbox."""

    if TYPE_CHECKING:
        # Fields of the generated base, spelled out for type checkers (which see only
        # ChannelSettingsBase); at run time they come from channel_settings_base.
        sms_http_host: str
        sms_http_port: int
        sms_providers: list[str]

    sms_twilio_account_sid: str | None = Field(
        default=None, description="Twilio account SID (`AC…`); required to use `twilio`."
    )
    sms_twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio auth token; required to use `twilio`."
    )
    sms_twilio_from: str | None = Field(
        default=None,
        description="Number (E.164) or alphanumeric sender ID Twilio sends from; required to use "
        "`twilio`.",
    )
    sms_twilio_base_url: str = Field(
        default="https://api.twilio.com",
        pattern=BASE_URL,
        description="Twilio's API address (change it for a test double).",
    )
    sms_vonage_api_key: str | None = Field(
        default=None, description="Vonage API key; required to use `vonage`."
    )
    sms_vonage_api_secret: SecretStr | None = Field(
        default=None, description="Vonage API secret; required to use `vonage`."
    )
    sms_vonage_from: str | None = Field(
        default=None,
        description="Number (E.164) or alphanumeric sender ID Vonage sends from; required to use "
        "`vonage`.",
    )
    sms_vonage_base_url: str = Field(
        default="https://rest.nexmo.com",
        pattern=BASE_URL,
        description="Vonage's SMS API address (change it for a test double).",
    )
    sms_sandbox_dir: Path | None = Field(
        default=None,
        description="Directory where the `sandbox` provider writes each SMS as a JSON file "
        "(made if missing); unset: it writes nothing.",
    )

    @model_validator(mode="after")
    def _credentials(self) -> SmsSettings:
        # Checked here so that a provider listed without its credentials stops the service at
        # start-up, not at its first SMS.
        for provider in self.sms_providers:
            missing = [n for n in REQUIRED.get(provider, ()) if not getattr(self, n)]
            if missing:
                names = ", ".join(f"HERALD_{n.upper()}" for n in missing)
                raise ValueError(f"sms provider {provider} needs {names}")
        return self
