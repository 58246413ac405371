"""herald-dispatcher: the control plane (outbox relay, outcome and dead-letter consumers)."""

from __future__ import annotations

import asyncio

from herald_common.amqp import Publisher
from herald_common.logging import configure_logging
from herald_common.service import Resources, Stop, serve

from .outcomes import Consumers
from .relay import OutboxRelay
from .settings import DispatcherSettings


async def run(settings: DispatcherSettings) -> None:
    async def start(resources: Resources) -> Stop:
        topology = resources.topology
        channel = await resources.connection.channel()
        await topology.declare(channel)
        await channel.close()
        publisher = await Publisher.open(resources.connection, settings.publish_timeout)
        relay = OutboxRelay(
            resources.pool,
            publisher,
            topology.notifications_exchange,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval,
            registry=resources.registry,
        )
        consumers = Consumers(
            resources.connection,
            resources.pool,
            publisher,
            topology,
            prefetch=settings.outcome_prefetch,
            registry=resources.registry,
        )
        await consumers.start()
        await relay.start()

        async def stop() -> None:
            await relay.stop()
            await consumers.stop()
            await publisher.close()

        return stop

    await serve(
        "dispatcher", settings, settings.dispatcher_http_host, settings.dispatcher_http_port, start
    )


def main() -> None:
    settings = DispatcherSettings()
    configure_logging("dispatcher", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run(settings))
