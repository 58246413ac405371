from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from herald_common.settings import RetryPolicy, WorkerSettings, check_delays


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


class EmailSettings(WorkerSettings):
    """The email channel service and its SMTP provider."""

    email_http_host: str = Field(
        default="127.0.0.1",
        description="Address of the email service's /healthz, /readyz, /metrics.",
    )
    email_http_port: int = Field(
        default=8002, ge=0, le=65535, description="Port of the email service's ops HTTP server."
    )
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
    email_smtp_timeout: float = Field(
        default=10.0, gt=0, description="Seconds an SMTP command may take; longer is transient."
    )
    email_smtp_connections: int = Field(
        default=32,
        ge=1,
        description="SMTP connections kept open and reused (lower it if the relay limits them).",
    )
    email_from: str = Field(
        default="Herald <herald@localhost>", description="From header and envelope sender."
    )
    email_retry_delays: Annotated[list[float] | None, NoDecode] = Field(
        default=None, description="Email's retry tiers in seconds; HERALD_RETRY_DELAYS if unset."
    )
    email_retry_max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Email's attempt budget; HERALD_RETRY_MAX_ATTEMPTS if unset.",
    )

    @field_validator("email_smtp_tls_ca_file")
    @classmethod
    def _existing_ca_file(cls, value: str | None) -> str | None:
        # Checked here so a wrong path stops the service at start-up, not at its first email.
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("email_retry_delays", mode="before")
    @classmethod
    def _split_email_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("email_retry_delays")
    @classmethod
    def _valid_email_delays(cls, value: list[float] | None) -> list[float] | None:
        return check_delays(value)

    def retry_policy(self) -> RetryPolicy:
        base = super().retry_policy()
        return RetryPolicy(
            delays=tuple(self.email_retry_delays) if self.email_retry_delays else base.delays,
            max_attempts=self.email_retry_max_attempts or base.max_attempts,
            jitter=base.jitter,
        )
