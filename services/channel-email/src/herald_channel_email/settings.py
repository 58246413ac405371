from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from herald_common.settings import RetryPolicy, WorkerSettings, check_delays


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
    email_smtp_starttls: bool = Field(default=False, description="Upgrade with STARTTLS.")
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
