"""herald-dispatcher: the control plane (outbox relay, outcome and dead-letter consumers)."""

from __future__ import annotations

from herald_common import loop
from herald_common.logging import configure_logging
from herald_common.service import Resources, Stop, serve

from .dispatcher import Dispatcher
from .settings import DispatcherSettings


async def run(settings: DispatcherSettings) -> None:
    dispatcher: Dispatcher | None = None

    async def start(resources: Resources) -> Stop:
        # serve() retries a start the broker interrupted: the dispatcher is built once (its
        # metrics are registered once) and its start releases whatever it had opened.
        nonlocal dispatcher
        if dispatcher is None:
            dispatcher = Dispatcher(
                settings,
                pool=resources.pool,
                connection=resources.connection,
                topology=resources.topology,
                registry=resources.registry,
            )
        await dispatcher.start()
        return dispatcher.stop

    await serve(
        "dispatcher", settings, settings.dispatcher_http_host, settings.dispatcher_http_port, start
    )


def main() -> None:
    settings = DispatcherSettings()
    configure_logging("dispatcher", level=settings.log_level, fmt=settings.log_format)
    loop.run(run(settings), settings.event_loop)
