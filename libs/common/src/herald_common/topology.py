"""Every exchange, queue and binding Herald uses, in one readable place.

    notifications (topic) --"<key>.high"-->    <key>.high    work queues (quorum): per key
                          --"<key>.default"--> <key>         (email, sms, push.fcm,
                          --"<key>.low"-->     <key>.low      push.webpush) one per lane
    <key>[.<lane>] --delivery limit (DLX)--> dead-letters (direct) --"<channel>"--> <channel>.dead
    worker --transient failure: publish "<key>.<lane>", header herald-delay-queue-->
        delays (headers) --> <key>.delay.<delay>   TTL tier (quorum), shared by the key's lanes
    <key>.delay.<delay> --TTL expiry (DLX notifications, the message's own routing key)-->
        the lane it came from
    worker --permanent / exhausted (publish)--> dead-letters --"<channel>"--> <channel>.dead
    worker --outcome batch--> events (topic) --"outcome.<channel>"--> outcomes
    outcomes --delivery limit (DLX)--> dead-letters --"outcomes"--> outcomes.dead
    dispatcher --bad outcome items (publish)--> dead-letters --"outcomes"--> outcomes.dead
    <channel>.dead, outcomes.dead --delivery limit (DLX "" -> "parked")--> parked   (terminal)

Retries are republished into a tier rather than dead-lettered into it, so a message never
cycles through dead-lettering alone (RabbitMQ drops a message dead-lettered for expiry or the
delivery limit into a queue already in its ``x-death`` history). For the same reason the ``.dead``
queues do not dead-letter back into ``dead-letters`` but into ``parked``, a queue no message has
been in before: it has no dead-letter exchange of its own and nothing consumes it; the dispatcher
watches its depth, and an operator empties it.

Lanes: a notification's ``priority`` picks its lane, and a channel service serves the high lane
first (``lanes.LaneGate``), so a one-time code never waits behind a campaign in the normal lane.
The normal lane keeps the work queue's plain name and the routing key ``<key>.default`` that
messages had before lanes existed. A retry keeps its lane: the delay tier dead-letters into the
notifications exchange with the routing key the message was published into the tier with.

Every queue is a quorum queue with an explicit ``x-delivery-limit`` (3.x has no default, 4.x
defaults to 20 and drops the message when no dead-letter exchange is set) and, except ``parked``,
at-least-once dead-lettering (at-most-once, the default, can lose a message on its way). Every
service declares the shared part at start, and a channel service adds the tiers of its own retry
policy. Declaration is idempotent; a queue redeclared with other arguments fails, so tier names
carry their delay and a changed policy declares new tiers instead of clashing with old ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from .channels import channel_of, queue_keys
from .settings import CHANNELS, RetryPolicy

DELIVERY_LIMIT = 50
"""Deliveries before the broker dead-letters a message. Herald never relies on it for poison: the
channel runtime dead-letters what it cannot handle itself and the dispatcher never nacks with
requeue. What counts towards it is consumer crashes, channel losses, drains at SIGTERM and
``consumer_timeout`` closing a channel held through a long database outage, none of which says
anything about the message; so the limit is high enough that those never fail a notification,
and still ends a crash loop (a message that kills its consumer every time)."""

PARKED_DELIVERY_LIMIT = 1_000_000
"""The terminal queue's limit: explicit (4.x would otherwise drop a parked message after 20
deliveries, and it has nowhere further to go), and so high that inspecting parked messages (a get
and requeue counts as a delivery up to 4.2) never reaches it. Not -1: 4.x reads that as no
limit, but 3.x takes it literally."""

LANES = ("high", "normal", "low")
"""Priority lanes, served in this order."""

NORMAL = "normal"
"""The lane of a notification that names no priority."""

DELAY_QUEUE_HEADER = "herald-delay-queue"
"""Names the delay tier a retry is published into (through the ``delays`` headers exchange)."""

OUTCOMES_ROUTING_KEY = "outcomes"
"""Routing key of outcome messages on the dead-letter exchange."""

_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
_SAFE_DEAD_LETTERING: dict[str, Any] = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def _delay_label(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class Topology:
    """Names derived from the namespace; nothing here touches the broker until ``declare``.

    ``delivery_limit`` is a parameter so tests can reach it in a few redeliveries.
    """

    namespace: str
    channels: tuple[str, ...] = field(default=CHANNELS)
    delivery_limit: int = DELIVERY_LIMIT

    @property
    def notifications_exchange(self) -> str:
        return f"{self.namespace}.notifications"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def delays_exchange(self) -> str:
        """Headers exchange into the delay tiers: a retry keeps its lane's routing key."""
        return f"{self.namespace}.delays"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def control_exchange(self) -> str:
        """Fanout exchange of operator commands to every channel-service instance (pause and
        resume a channel); each instance binds an exclusive queue of its own to it."""
        return f"{self.namespace}.control"

    @property
    def outcomes_queue(self) -> str:
        return f"{self.namespace}.outcomes"

    @property
    def outcomes_dead_letter_queue(self) -> str:
        return f"{self.namespace}.outcomes.dead"

    @property
    def parked_queue(self) -> str:
        """Where messages end that even a dead-letter consumer could not take (terminal)."""
        return f"{self.namespace}.parked"

    def work_queue(self, queue_key: str, lane: str = NORMAL) -> str:
        """A work queue, by its key (``email``, ``sms``, ``push.fcm``: see ``channels``) and
        lane: ``<ns>.email`` for the normal lane, ``<ns>.email.high``, ``<ns>.email.low``."""
        if lane == NORMAL:
            return f"{self.namespace}.{queue_key}"
        return f"{self.namespace}.{queue_key}.{lane}"

    def lane_queues(self, queue_key: str) -> list[str]:
        """Every lane's work queue of one key, high first."""
        return [self.work_queue(queue_key, lane) for lane in LANES]

    def dead_letter_queue(self, channel: str) -> str:
        return f"{self.namespace}.{channel}.dead"

    def retry_queue(self, queue_key: str, delay: float) -> str:
        """A delay tier of one key's work queues: it expires back into the lane of each message
        (named ``delay``, not ``retry`` as before lanes, whose tiers expired into one queue)."""
        return f"{self.namespace}.{queue_key}.delay.{_delay_label(delay)}"

    @staticmethod
    def routing_key(queue_key: str, lane: str = NORMAL) -> str:
        """Routing key of a notification for one work queue key and lane."""
        return f"{queue_key}.{'default' if lane == NORMAL else lane}"

    @staticmethod
    def outcome_routing_key(channel: str) -> str:
        return f"outcome.{channel}"

    def _dead_lettering_to(self, exchange: str, routing_key: str) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_SAFE_DEAD_LETTERING,
            "x-dead-letter-exchange": exchange,
            "x-dead-letter-routing-key": routing_key,
            "x-delivery-limit": self.delivery_limit,
        }

    def work_queue_arguments(self, queue_key: str) -> dict[str, Any]:
        # Every work queue of a channel dead-letters into the channel's one .dead queue.
        return self._dead_lettering_to(self.dead_letter_exchange, channel_of(queue_key))

    def outcomes_queue_arguments(self) -> dict[str, Any]:
        return self._dead_lettering_to(self.dead_letter_exchange, OUTCOMES_ROUTING_KEY)

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        """A ``.dead`` queue (and ``outcomes.dead``): past the delivery limit, into ``parked``
        through the default exchange (never back into ``dead-letters``: see the module)."""
        return self._dead_lettering_to("", self.parked_queue)

    @staticmethod
    def parked_queue_arguments() -> dict[str, Any]:
        return {**_QUORUM, "x-delivery-limit": PARKED_DELIVERY_LIMIT}

    def retry_queue_arguments(self, queue_key: str, delay: float) -> dict[str, Any]:
        # Expired messages go back through the notifications exchange with their own routing
        # key (no x-dead-letter-routing-key), so each returns to its lane. Nothing consumes a
        # tier, so its delivery limit is never reached; it is explicit all the same.
        arguments = self._dead_lettering_to(self.notifications_exchange, "")
        del arguments["x-dead-letter-routing-key"]
        return {**arguments, "x-message-ttl": round(delay * 1000)}

    def queues(
        self, retry_policies: dict[str, RetryPolicy] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every queue of the namespace with its arguments (tiers of the given policies)."""
        queues: dict[str, dict[str, Any]] = {
            self.parked_queue: self.parked_queue_arguments(),
            self.outcomes_queue: self.outcomes_queue_arguments(),
            self.outcomes_dead_letter_queue: self.dead_letter_queue_arguments(),
        }
        for channel in self.channels:
            for key in queue_keys(channel):
                for name in self.lane_queues(key):
                    queues[name] = self.work_queue_arguments(key)
            queues[self.dead_letter_queue(channel)] = self.dead_letter_queue_arguments()
        for channel, policy in (retry_policies or {}).items():
            for key in queue_keys(channel):
                for delay in policy.tier_delays():
                    queues[self.retry_queue(key, delay)] = self.retry_queue_arguments(key, delay)
        return queues

    def queue_names(self, retry_policies: dict[str, RetryPolicy] | None = None) -> list[str]:
        return list(self.queues(retry_policies))

    def exchange_names(self) -> list[str]:
        return [
            self.notifications_exchange,
            self.dead_letter_exchange,
            self.events_exchange,
            self.delays_exchange,
            self.control_exchange,
        ]

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare the shared topology; safe to repeat, and every service does at start."""
        notifications = await channel.declare_exchange(
            self.notifications_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead_letters = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        events = await channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_exchange(
            self.delays_exchange, aio_pika.ExchangeType.HEADERS, durable=True
        )
        await channel.declare_exchange(
            self.control_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        # parked first: it is where the .dead queues dead-letter to.
        await channel.declare_queue(
            self.parked_queue, durable=True, arguments=self.parked_queue_arguments()
        )
        for name in self.channels:
            for key in queue_keys(name):
                for lane in LANES:
                    work = await channel.declare_queue(
                        self.work_queue(key, lane),
                        durable=True,
                        arguments=self.work_queue_arguments(key),
                    )
                    await work.bind(notifications, routing_key=self.routing_key(key, lane))
                    if lane == NORMAL:
                        # Before lanes the normal queue took "<key>.#", which would now copy
                        # every high and low message into it too. Unbinding is idempotent.
                        await work.unbind(notifications, routing_key=f"{key}.#")
            dead = await channel.declare_queue(
                self.dead_letter_queue(name),
                durable=True,
                arguments=self.dead_letter_queue_arguments(),
            )
            await dead.bind(dead_letters, routing_key=name)
        outcomes = await channel.declare_queue(
            self.outcomes_queue, durable=True, arguments=self.outcomes_queue_arguments()
        )
        await outcomes.bind(events, routing_key="outcome.#")
        outcomes_dead = await channel.declare_queue(
            self.outcomes_dead_letter_queue,
            durable=True,
            arguments=self.dead_letter_queue_arguments(),
        )
        await outcomes_dead.bind(dead_letters, routing_key=OUTCOMES_ROUTING_KEY)

    async def declare_retry_tiers(
        self, channel: AbstractChannel, channel_name: str, policy: RetryPolicy
    ) -> None:
        delays = await channel.get_exchange(self.delays_exchange, ensure=False)
        for key in queue_keys(channel_name):
            for delay in policy.tier_delays():
                name = self.retry_queue(key, delay)
                tier = await channel.declare_queue(
                    name, durable=True, arguments=self.retry_queue_arguments(key, delay)
                )
                await tier.bind(delays, arguments={"x-match": "all", DELAY_QUEUE_HEADER: name})

    async def delete(
        self, channel: AbstractChannel, retry_policies: dict[str, RetryPolicy]
    ) -> None:
        """Remove everything of this namespace (test runs clean up after themselves)."""
        for name in self.queue_names(retry_policies):
            await channel.queue_delete(name)
        for name in self.exchange_names():
            await channel.exchange_delete(name)
