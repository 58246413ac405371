"""An email channel service whose provider accepts every notification at once.

It is ``herald-channel-email`` with the SMTP provider swapped for one that returns a receipt
immediately, so a benchmark measures Herald's own path (API, PostgreSQL, outbox, broker, channel
runtime, outcome events, dispatcher) and not a mail server. It reads the email service's settings
(``HERALD_EMAIL_HTTP_PORT`` and the rest): run it with ``python -m bench.instant_channel``.
"""

from __future__ import annotations

import asyncio
import contextlib

from herald_channel_email.settings import EmailSettings
from herald_common.logging import configure_logging
from herald_common.schemas import Delivery
from herald_common.service import Resources, Stop, serve
from herald_common.worker import ChannelWorker, Receipt

RECEIPT = Receipt(provider="instant")


class InstantProvider:
    name = "instant"

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        # No capacity to wait for: an empty exit stack is an async context manager doing nothing.
        return contextlib.AsyncExitStack()

    async def send(self, delivery: Delivery) -> Receipt:
        return RECEIPT

    async def close(self) -> None:
        return None


async def run(settings: EmailSettings) -> None:
    async def start(resources: Resources) -> Stop:
        worker = ChannelWorker(
            channel="email",
            settings=settings,
            retry_policy=settings.retry_policy(),
            providers=[InstantProvider()],
            connection=resources.connection,
            pool=resources.pool,
            registry=resources.registry,
        )
        await worker.start()
        return worker.stop

    await serve(
        "channel-instant", settings, settings.email_http_host, settings.email_http_port, start
    )


def main() -> None:
    settings = EmailSettings()
    configure_logging("channel-instant", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
