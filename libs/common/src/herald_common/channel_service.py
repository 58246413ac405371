"""A channel service is its providers plus this: ``run_channel`` wires settings, the service
runtime (ops HTTP, PostgreSQL, RabbitMQ, SIGTERM) and the channel-worker runtime together.

A channel package's ``main`` names its providers and calls ``run_channel``::

    PROVIDERS = {"twilio": TwilioProvider, "vonage": VonageProvider, "sandbox": sandbox_for("sms")}

    def main() -> None:
        run_channel(SmsSettings(), PROVIDERS)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import loop
from .control import ChannelControl
from .logging import configure_logging
from .service import Resources, Stop, serve
from .settings import RetryPolicy, WorkerSettings
from .worker import ChannelWorker, Provider


@dataclass(frozen=True)
class ChannelOptions:
    """What the runtime needs to know of a channel, read from its settings."""

    channel: str
    http_host: str
    http_port: int
    providers: tuple[str, ...]
    """Provider names in the order they are tried (``HERALD_<CHANNEL>_PROVIDERS``)."""
    prefetch: int
    retry_policy: RetryPolicy


class ChannelSettings(Protocol):
    """A channel service's settings: ``WorkerSettings`` plus the channel's own fields."""

    def channel_options(self) -> ChannelOptions: ...


ProviderFactory = Callable[[Any], Provider[Any]]
"""Builds a provider from the channel's settings object."""


class UnknownProvider(ValueError):
    """A provider name in the settings that the channel does not have."""


def build_providers(
    settings: Any, names: Sequence[str], factories: Mapping[str, ProviderFactory]
) -> list[Provider[Any]]:
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise UnknownProvider(
            f"unknown provider(s) {', '.join(unknown)}; this channel has {', '.join(factories)}"
        )
    return [factories[name](settings) for name in names]


async def serve_channel(
    settings: WorkerSettings, options: ChannelOptions, factories: Mapping[str, ProviderFactory]
) -> None:
    """Run the channel service until SIGTERM/SIGINT."""

    async def start(resources: Resources) -> Stop:
        providers = build_providers(settings, options.providers, factories)
        worker = ChannelWorker(
            channel=options.channel,
            settings=settings.model_copy(update={"prefetch": options.prefetch}),
            retry_policy=options.retry_policy,
            providers=providers,
            limits=getattr(settings, "provider_limits", None),
            connection=resources.connection,
            pool=resources.pool,
            registry=resources.registry,
        )
        control = ChannelControl(
            worker,
            connection=resources.connection,
            pool=resources.pool,
            topology=resources.topology,
            interval=settings.heartbeat_interval,
        )
        try:
            await control.prepare()  # paused by an operator: the worker starts paused
            await worker.start()
            await control.start()
        except BaseException:
            await control.stop()
            await worker.stop()
            for provider in providers:
                await provider.close()
            raise

        async def stop() -> None:
            await control.stop()
            await worker.stop()
            for provider in providers:
                await provider.close()

        return stop

    await serve(f"channel-{options.channel}", settings, options.http_host, options.http_port, start)


def run_channel(settings: Any, factories: Mapping[str, ProviderFactory]) -> None:
    """The whole ``main`` of a channel service: logging, then serve until stopped."""
    options: ChannelOptions = settings.channel_options()
    service = f"channel-{options.channel}"
    configure_logging(service, level=settings.log_level, fmt=settings.log_format)
    loop.run(serve_channel(settings, options, factories), settings.event_loop)
