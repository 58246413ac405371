"""``herald-api``: serve the HTTP API until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import structlog
from aiohttp import web

from herald_common.logging import configure_logging
from herald_common.loop import loop_factory
from herald_common.tracing import configure_tracing

from .app import create_app
from .settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    configure_logging("api", level=settings.log_level, fmt=settings.log_format)
    structlog.get_logger("herald_api").info(
        "starting", host=settings.api_host, port=settings.api_port, namespace=settings.namespace
    )
    shutdown_tracing = configure_tracing("herald-api")
    app = create_app(settings)
    if shutdown_tracing is not None:

        async def flush_spans(_: web.Application) -> None:
            await shutdown_tracing()

        app.on_cleanup.append(flush_spans)
    web.run_app(
        app,
        host=settings.api_host,
        port=settings.api_port,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,
        print=None,
        loop=loop_factory(settings.event_loop)(),
    )


if __name__ == "__main__":
    main()
