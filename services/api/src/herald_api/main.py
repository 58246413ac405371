"""``herald-api``: serve the HTTP API until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import structlog
from aiohttp import web

from herald_common.logging import configure_logging
from herald_common.loop import loop_factory

from .app import create_app
from .settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    configure_logging("api", level=settings.log_level, fmt=settings.log_format)
    structlog.get_logger("herald_api").info(
        "starting", host=settings.api_host, port=settings.api_port, namespace=settings.namespace
    )
    web.run_app(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,
        print=None,
        loop=loop_factory(settings.event_loop)(),
    )


if __name__ == "__main__":
    main()
