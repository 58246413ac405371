"""The email channel service's settings: the channel's own (``channel_settings_base``), the SMTP
relay, SendGrid and the sandbox."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, field_validator, model_validator

from herald_common.channel_settings import ChannelSettingsBase, channel_settings_base

if TYPE_CHECKING:
    _Base = ChannelSettingsBase
else:
    _Base = channel_settings_base(
        "email", http_port=8002, default_providers="smtp", providers=("smtp", "sendgrid", "sandbox")
    )


class SmtpTls(enum.StrEnum):
    """How the connection to the SMTP relay is encrypted."""

    OPPORTUNISTIC = "opportunistic"
    """STARTTLS when the relay offers it, plain text when it does not."""
    STARTTLS = "starttls"
    """STARTTLS always: a relay that does not offer it is an error (nothing is sent in clear)."""
    IMPLICIT = "implicit"
    """TLS from the first byte (SMTPS, usually port 465)."""
    NONE = "none"
    """Plain text, even when the relay offers STARTTLS."""


class EmailSettings(_Base):
    """The email channel service and its providers: an SMTP relay, SendGrid and the sandbox."""

    if TYPE_CHECKING:
        # Fields of the generated base, spelled out for type checkers (which see only
        # ChannelSettingsBase); at run time they come from channel_settings_base.
        email_http_host: str
        email_http_port: int
        email_providers: list[str]
        email_retry_delays: list[float] | None
        email_retry_max_attempts: int | None
        email_smtp_timeout: float | None

    email_smtp_host: str = Field(default="127.0.0.1", description="SMTP relay host.")
    email_smtp_port: int = Field(default=8025, ge=1, le=65535, description="SMTP relay port.")
    email_smtp_username: str | None = Field(default=None, description="SMTP user, if any.")
    email_smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    email_smtp_tls: SmtpTls = Field(
        default=SmtpTls.OPPORTUNISTIC,
        description=(
            "Encryption to the relay: `opportunistic` (STARTTLS when offered), `starttls` "
            "(required: nothing is sent to a relay not offering it, the email is retried), "
            "`implicit` (TLS from the first byte, port 465) or `none`."
        ),
    )
    email_smtp_tls_verify: bool = Field(
        default=True,
        description=(
            "Verify the relay's certificate and host name when TLS is used; nothing is sent to a "
            "relay that fails (with `opportunistic` too). Turn off only on a trusted network."
        ),
    )
    email_smtp_tls_ca_file: str | None = Field(
        default=None,
        description=(
            "PEM bundle of the CAs to trust for the relay's certificate, instead of the system's "
            "(for a private CA); unset: the system's."
        ),
    )
    email_smtp_connections: int = Field(
        default=32,
        ge=1,
        description="SMTP connections kept open and reused (lower it if the relay limits them).",
    )
    email_from: str = Field(
        default="Herald <herald@localhost>", description="From header and envelope sender."
    )
    email_sendgrid_api_key: SecretStr | None = Field(
        default=None,
        description="SendGrid API key (with Mail Send access); required to use `sendgrid`.",
    )
    email_sendgrid_base_url: str = Field(
        default="https://api.sendgrid.com",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="SendGrid's API address (change it for a test double).",
    )
    email_sandbox_dir: Path | None = Field(
        default=None,
        description="Directory where the `sandbox` provider writes each email as a JSON file "
        "(made if missing); unset: it writes nothing.",
    )

    @property
    def smtp_timeout(self) -> float:
        """Seconds an SMTP command may take: the smtp provider's timeout
        (``HERALD_EMAIL_SMTP_TIMEOUT``, else ``HERALD_PROVIDER_TIMEOUT``), which bounds the whole
        send; no command can outlast the send it is part of."""
        return self.email_smtp_timeout or self.provider_timeout

    @field_validator("email_smtp_tls_ca_file")
    @classmethod
    def _existing_ca_file(cls, value: str | None) -> str | None:
        # Checked here so a wrong path stops the service at start-up, not at its first email.
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _sendgrid_key(self) -> EmailSettings:
        # Checked here so that SendGrid listed without a key stops the service at start-up.
        if "sendgrid" in self.email_providers and not self.email_sendgrid_api_key:
            raise ValueError("email provider sendgrid needs HERALD_EMAIL_SENDGRID_API_KEY")
        return self
