"""herald-channel-email: the channel-worker runtime with the SMTP provider."""

from __future__ import annotations

import asyncio

from herald_common.logging import configure_logging
from herald_common.service import Resources, Stop, serve
from herald_common.worker import ChannelWorker

from .settings import EmailSettings
from .smtp import SmtpProvider


async def run(settings: EmailSettings) -> None:
    async def start(resources: Resources) -> Stop:
        provider = SmtpProvider(settings)
        worker = ChannelWorker(
            channel="email",
            settings=settings,
            retry_policy=settings.retry_policy(),
            provider=provider,
            connection=resources.connection,
            pool=resources.pool,
            registry=resources.registry,
        )
        await worker.start()

        async def stop() -> None:
            await worker.stop()
            await provider.close()

        return stop

    await serve(
        "channel-email", settings, settings.email_http_host, settings.email_http_port, start
    )


def main() -> None:
    settings = EmailSettings()
    configure_logging("channel-email", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run(settings))
