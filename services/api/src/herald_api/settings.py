"""Settings of the API service (environment variables ``HERALD_API_*`` and the common ones)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from herald_common.settings import CommonSettings


class ApiSettings(CommonSettings):
    """The HTTP API that accepts notifications and manages dead letters."""

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="Port the API listens on.")
    api_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body accepted, in bytes; larger ones are answered with 413.",
    )
    api_max_batch: int = Field(
        default=1000,
        ge=1,
        description="Most notifications one `POST /v1/notifications/batch` may carry.",
    )
    outbox_grace: float = Field(
        default=10.0,
        ge=0,
        description=(
            "Seconds an accepted notification's outbox row waits before the dispatcher's relay "
            "may publish it; the API publishes it itself right after commit when it can."
        ),
    )


API_SETTINGS = web.AppKey("api_settings", ApiSettings)
