"""Settings of the API service (environment variables ``HERALD_API_*`` and the common ones)."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import Field, SecretStr, field_validator

from herald_common.settings import CommonSettings

SECRET_PATTERN = re.compile(r"[\x21-\x7e]{32,512}")
"""What can be an API key's secret: one Herald makes (``hrld_`` + 256 random bits in URL-safe
base64), or a bootstrap secret a deployment chose (any 32 or more visible ASCII characters).
Anything else is refused before it is hashed or looked up."""


class ApiSettings(CommonSettings):
    """The HTTP API that accepts notifications and manages dead letters."""

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="Port the API listens on.")
    api_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body accepted, in bytes; larger ones are answered with 413.",
    )
    api_max_campaign_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest CSV a `POST /v1/campaigns` may stream in, in bytes (413 beyond); it is read "
            "as it arrives, never held in memory whole."
        ),
    )
    api_campaign_upload_timeout: float = Field(
        default=900.0,
        gt=0,
        description=(
            "Seconds a campaign upload may take to arrive and be checked (408 beyond, nothing "
            "stored); no database connection is held meanwhile."
        ),
    )
    api_max_campaign_uploads: int = Field(
        default=2,
        ge=1,
        description=(
            "Campaign uploads one API process checks at once; one more is answered 503 with "
            "Retry-After (checking rows takes CPU the other requests need)."
        ),
    )
    api_max_batch: int = Field(
        default=1000,
        ge=1,
        description="Most notifications one `POST /v1/notifications/batch` may carry.",
    )
    api_max_metadata_bytes: int = Field(
        default=16 * 1024,
        ge=2,
        description=(
            "Largest `metadata` a notification may carry, in bytes of compact JSON; larger ones "
            "are answered with 422. Metadata travels in every delivery message and database row."
        ),
    )
    api_db_acquire_timeout: float = Field(
        default=3.0,
        gt=0,
        description=(
            "Seconds a request waits for a free database connection before it is answered with "
            "503 and `Retry-After` (nothing changed)."
        ),
    )
    api_max_pending_publishes: int = Field(
        default=2000,
        ge=0,
        description=(
            "Most outbox messages the API publishes at once after commit (awaiting the broker's "
            "confirm). Past it, as while the broker is down, new rows are stored due at once and "
            "left to the dispatcher's relay (woken by NOTIFY), so a slow broker piles nothing up "
            "in the API's memory. 0 leaves every message to the relay."
        ),
    )
    api_max_redrive: int = Field(
        default=500,
        ge=1,
        description=(
            "Most dead letters one `POST /v1/dead-letters/redrive` examines; its `next_cursor` "
            "continues after them."
        ),
    )
    api_bootstrap_key: SecretStr | None = Field(
        default=None,
        description=(
            "When set (any string of at least 32 characters), the API makes sure at start that "
            "a key with exactly this secret exists in project `default` with scopes `send`, "
            "`read` and `admin` (a revoked one stays revoked). For development, compose and "
            "tests; create real keys with `herald-keys create`."
        ),
    )
    api_key_rate_limit: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Requests a second each API key may make (bursts of twice that) when the key sets "
            "no rate of its own; over it, 429 with `Retry-After`. 0: no limit. Counted per API "
            "replica."
        ),
    )
    api_key_cache_ttl: float = Field(
        default=2.0,
        gt=0,
        le=5,
        description=(
            "Seconds a replica trusts a key it verified (or found unknown) before asking the "
            "database again: a revoked key stops working on every replica within this time."
        ),
    )
    outbox_grace: float = Field(
        default=10.0,
        ge=0,
        description=(
            "Seconds an accepted notification's outbox row waits before the dispatcher's relay "
            "may publish it; the API publishes it itself right after commit when it can."
        ),
    )

    @field_validator("api_bootstrap_key", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_bootstrap_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # The contract: any string of at least 32 characters, so a deployment can bring a secret
        # of its own making; limited to what an Authorization header carries as it was written
        # (visible ASCII). The value is never echoed.
        if value is not None and not SECRET_PATTERN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "the bootstrap key must be 32 to 512 visible ASCII characters (no spaces); "
                "make a random one with `herald-keys create` or "
                "python -c \"import secrets; print('hrld_' + secrets.token_urlsafe(32))\""
            )
        return value


API_SETTINGS = web.AppKey("api_settings", ApiSettings)
