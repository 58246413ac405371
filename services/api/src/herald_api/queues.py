"""Queue control: what every channel's queues hold (``GET /v1/queues``) and an operator's pause
and resume of a channel (``POST /v1/channels/{channel}/pause`` and ``/resume``).

The pause is stored first (``channel_controls``, audited in the same transaction), then told to
every running instance over the control exchange; an instance that missed the command reads the
state on its next heartbeat, and one started later reads it before it consumes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from herald_common import control
from herald_common.channels import CHANNELS, queue_keys
from herald_common.topology import LANES

from . import audit
from .broker import BrokerLink
from .database import Database
from .errors import NotFound
from .models import (
    AuditAction,
    ChannelQueues,
    ChannelState,
    LaneQueue,
    OutboxLag,
    ProviderBreakers,
    QueueOverview,
    RetryTier,
)
from .principal import VerifiedKey, principal
from .responses import json_model

log = structlog.get_logger("herald.api.queues")

_NO_INSTANCES = control.ChannelInstances(0, 0, 0, 0, ())

OUTBOX_COUNT_CAP = 100_000
"""Due outbox rows counted at most (a request must not count millions)."""


class QueueControl:
    def __init__(self, database: Database, broker: BrokerLink) -> None:
        self._database = database
        self._broker = broker

    async def overview(self) -> QueueOverview:
        topology = self._broker.topology
        async with self._database.connection() as connection:
            paused = await control.paused_channels(connection)
            instances = await control.live_instances(connection)
            open_letters = await control.open_dead_letters(connection)
            backlog, oldest_age = await control.outbox_lag(connection, OUTBOX_COUNT_CAP)
        lanes = {
            channel: [
                (topology.work_queue(key, lane), key, lane)
                for key in queue_keys(channel)
                for lane in LANES
            ]
            for channel in CHANNELS
        }
        names = [name for queues in lanes.values() for name, _, _ in queues]
        names += [topology.dead_letter_queue(channel) for channel in CHANNELS]
        names += [
            q for channel in CHANNELS for q in instances.get(channel, _NO_INSTANCES).retry_queues
        ]
        stats = await self._broker.queue_stats(names)

        def depth(name: str) -> int | None:
            found = stats.get(name)
            return None if found is None else found.messages

        def consumers(name: str) -> int | None:
            found = stats.get(name)
            return None if found is None else found.consumers

        channels = []
        for channel in CHANNELS:
            live = instances.get(channel, _NO_INSTANCES)
            keys = queue_keys(channel)
            channels.append(
                ChannelQueues(
                    channel=channel,
                    paused=paused.get(channel, False),
                    instances=live.instances,
                    paused_instances=live.paused_instances,
                    in_flight=live.in_flight,
                    delivered_per_second=round(live.sent_last_minute / control.SENT_WINDOW, 3),
                    lanes=[
                        LaneQueue.model_validate(
                            {
                                "queue": name,
                                "key": key,
                                "lane": lane,
                                "depth": depth(name),
                                "consumers": consumers(name),
                            }
                        )
                        for name, key, lane in lanes[channel]
                    ],
                    retry_tiers=[
                        RetryTier(queue=q, key=_key_of(q, topology.namespace, keys), depth=depth(q))
                        for q in live.retry_queues
                    ],
                    dead_letter_queue=depth(topology.dead_letter_queue(channel)),
                    dead_letters=open_letters.get(channel, 0),
                    breakers=[
                        ProviderBreakers(
                            provider=provider,
                            closed=states.get("closed", 0),
                            half_open=states.get("half_open", 0),
                            open=states.get("open", 0),
                        )
                        for provider, states in sorted(live.breakers.items())
                    ],
                )
            )
        return QueueOverview(
            channels=channels,
            outbox=OutboxLag(backlog=backlog, oldest_age_seconds=oldest_age),
        )

    async def steer(self, channel: str, *, paused: bool, actor: VerifiedKey) -> ChannelState:
        if channel not in CHANNELS:
            raise NotFound(f"no channel {channel!r}; channels are {', '.join(CHANNELS)}")
        async with self._database.transaction() as connection:
            command = await control.write_paused(connection, channel, paused, str(actor.id))
            action: AuditAction = "channel.pause" if paused else "channel.resume"
            await audit.record(connection, actor, action, channel)
        delivered = await self._broker.tell_instances(command)
        log.warning("channel paused" if paused else "channel resumed", channel=channel,
                    delivered=delivered)  # fmt: skip
        return ChannelState(channel=channel, paused=paused, delivered=delivered)


QUEUES = web.AppKey("queues", QueueControl)


def _key_of(queue: str, namespace: str, keys: tuple[str, ...]) -> str:
    """The work-queue key of a retry tier ``<ns>.<key>.delay.<d>``."""
    rest = queue.removeprefix(f"{namespace}.")
    return next((k for k in sorted(keys, key=len, reverse=True) if rest.startswith(f"{k}.")), rest)


async def get_queues(request: web.Request) -> web.Response:
    return json_model(await request.app[QUEUES].overview())


def _steering(paused: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def steer(request: web.Request) -> web.Response:
        state = await request.app[QUEUES].steer(
            request.match_info["channel"], paused=paused, actor=principal(request)
        )
        return json_model(state)

    return steer


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/queues", get_queues)
    app.router.add_post("/v1/channels/{channel}/pause", _steering(True))
    app.router.add_post("/v1/channels/{channel}/resume", _steering(False))
