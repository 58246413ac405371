"""Settings shared by every Herald service.

Each service's ``main`` builds its settings object once and passes it down; nothing here reads the
environment at import time. Lists are comma-separated in the environment (``1,5,30``), not JSON.
"""

from __future__ import annotations

import random
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .channels import CHANNELS as CHANNELS  # the registry is the source; re-exported
from .templates import normalize_locale


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CommonSettings(BaseSettings):
    """Connection and naming settings every service reads."""

    # Settings hold secrets: a value that fails validation is never repeated in the error.
    model_config = SettingsConfigDict(
        env_prefix="HERALD_", extra="ignore", hide_input_in_errors=True
    )

    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ connection URL.",
    )
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/herald"),
        description="PostgreSQL connection URL.",
    )
    namespace: str = Field(
        default="herald",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        description="Prefix of every exchange and queue name; test runs use their own.",
    )
    log_level: str = Field(default="INFO", description="Minimum log level.")
    log_format: str = Field(
        default="auto",
        pattern="^(auto|json|console)$",
        description="`json`, `console`, or `auto` (console when stderr is a terminal).",
    )
    event_loop: str = Field(
        default="asyncio",
        pattern="^(uvloop|asyncio)$",
        description=(
            "`asyncio` (the standard library's loop) or `uvloop` (libuv's). On 2 cores "
            "`make bench` measured no gain from uvloop beyond the noise; try it on your hardware."
        ),
    )
    db_pool_min: int = Field(default=2, ge=1, description="Minimum PostgreSQL pool size.")
    db_pool_max: int = Field(default=10, ge=1, description="Maximum PostgreSQL pool size.")
    db_statement_cache_size: int = Field(
        default=100,
        ge=0,
        description="Prepared statements cached per PostgreSQL connection; 0 behind PgBouncer in "
        "transaction mode (then no startup parameter is sent either). The dispatcher LISTENs for "
        "NOTIFY and needs a session: connect it to PostgreSQL directly.",
    )
    publish_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for a publisher confirm before treating a publish as failed.",
    )
    shutdown_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a service waits for in-flight work after SIGTERM before it exits.",
    )
    default_locale: str = Field(
        default="en",
        description=(
            "Locale (BCP 47) templates are rendered in when a request names none, and the last "
            "one tried when the request's locale has no template."
        ),
    )

    @field_validator("default_locale")
    @classmethod
    def _bcp47(cls, value: str) -> str:
        return normalize_locale(value)


JITTER_STEPS = 2
"""Each tier gets this many longer siblings, spread over its jitter range."""


class RetryPolicy(BaseModel):
    """The retry ladder of one channel: TTL delay queues, one per tier and jitter step.

    Jitter cannot be a per-message TTL (quorum queues expire only at the head, so a long TTL would
    hold back short ones behind it). Instead each tier ``d`` has fixed-TTL siblings at
    ``d * (1 + jitter * k / JITTER_STEPS)``, and each retry picks one at random: retries of
    notifications that failed together spread out, and every queue still has a single TTL.
    """

    model_config = ConfigDict(frozen=True)

    delays: tuple[float, ...]
    max_attempts: int
    jitter: float = 0.0

    def _variants(self, delay: float) -> list[float]:
        steps = JITTER_STEPS if self.jitter > 0 else 0
        return [round(delay * (1 + self.jitter * k / JITTER_STEPS), 3) for k in range(steps + 1)]

    def tier_delays(self) -> list[float]:
        """Every TTL a tier queue is declared with."""
        return sorted({v for d in self.delays for v in self._variants(d)})

    def delay_for(
        self,
        retry_number: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Delay before retry ``retry_number`` (1-based), honouring a provider's Retry-After.

        Retries past the last tier stay on the last tier. A Retry-After longer than the tier picks
        the first tier that waits at least that long (or the longest tier). Jitter only lengthens.
        """
        base = self.delays[min(retry_number, len(self.delays)) - 1]
        if retry_after is not None and retry_after > base:
            longer = sorted(d for d in self.delays if d >= retry_after)
            base = longer[0] if longer else max(self.delays)
        return (rng or random).choice(self._variants(base))


def check_delays(value: list[float] | None) -> list[float] | None:
    if value is not None and (not value or any(d <= 0 for d in value)):
        raise ValueError("retry delays must be positive and at least one must be given")
    return value


class WorkerSettings(CommonSettings):
    """Settings of every service that consumes a channel's work queue."""

    retry_delays: Annotated[list[float], NoDecode] = Field(
        default=[1, 5, 30, 120, 600],
        description="Seconds each retry tier waits, comma-separated, one TTL queue per tier.",
    )
    retry_max_attempts: int = Field(
        default=5, ge=1, description="Attempts (the first included) before a dead letter."
    )
    retry_jitter: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Retries wait up to this fraction longer than their tier, at random (0: none).",
    )
    prefetch: int = Field(
        default=256, ge=1, le=2000, description="Deliveries a worker holds and works on at once."
    )
    provider_timeout: float = Field(
        default=15.0, gt=0, description="Seconds one provider call may take; longer is transient."
    )
    lease_margin: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds added to the provider timeout to make an attempt's lease: a redelivered copy "
            "waits that long for the holder's result before sending again (marked a possible "
            "duplicate)."
        ),
    )

    heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description=(
            "Seconds between a channel-service instance's heartbeats (what GET /v1/queues "
            "reports of it), each of which also reads whether an operator paused the channel."
        ),
    )

    @property
    def lease_seconds(self) -> float:
        """How long a claimed attempt belongs to its delivery (claim, provider call, record)."""
        return self.provider_timeout + self.lease_margin

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("retry_delays")
    @classmethod
    def _valid_delays(cls, value: list[float]) -> list[float]:
        check_delays(value)
        return value

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            delays=tuple(self.retry_delays),
            max_attempts=self.retry_max_attempts,
            jitter=self.retry_jitter,
        )
