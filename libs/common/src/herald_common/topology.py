"""Every exchange, queue and binding Herald uses, in one readable place.

    notifications (topic) --"<channel>.<route>"--> <channel>             work queue (quorum)
    <channel> --reject / delivery limit (DLX)--> dead-letters (direct) --"<channel>"--> .dead
    worker --republish on transient failure--> <channel>.retry.<delay>   TTL tier (quorum)
    <channel>.retry.<delay> --TTL expiry (DLX "" -> "<channel>")--> <channel> work queue
    worker --permanent / exhausted (publish)--> dead-letters --"<channel>"--> <channel>.dead
    worker --outcome batch--> events (topic) --"outcome.<channel>"--> outcomes

Retries are republished into a tier rather than dead-lettered into it, so a message never
cycles through dead-lettering alone (RabbitMQ drops such cycles silently). Every queue is a
quorum queue with at-least-once dead-lettering, and the delivery limit is explicit so 3.x
and 4.x treat poison messages alike. Declaration is idempotent: every service declares the shared
part at start, and a channel service adds the tiers of its own retry policy. Tier names carry
their delay, so a changed policy declares new tiers instead of clashing with old ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from .settings import CHANNELS, RetryPolicy

DELIVERY_LIMIT = 10
"""Redeliveries (consumer crashes, channel losses) before the broker dead-letters a message."""

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
    """Names derived from the namespace; nothing here touches the broker until ``declare``."""

    namespace: str
    channels: tuple[str, ...] = field(default=CHANNELS)

    @property
    def notifications_exchange(self) -> str:
        return f"{self.namespace}.notifications"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def outcomes_queue(self) -> str:
        return f"{self.namespace}.outcomes"

    @property
    def outcomes_dead_letter_queue(self) -> str:
        return f"{self.namespace}.outcomes.dead"

    def work_queue(self, channel: str) -> str:
        return f"{self.namespace}.{channel}"

    def dead_letter_queue(self, channel: str) -> str:
        return f"{self.namespace}.{channel}.dead"

    def retry_queue(self, channel: str, delay: float) -> str:
        return f"{self.namespace}.{channel}.retry.{_delay_label(delay)}"

    @staticmethod
    def routing_key(channel: str, route: str = "default") -> str:
        """Routing key of a notification; ``route`` leaves room for lanes and provider queues."""
        return f"{channel}.{route}"

    @staticmethod
    def outcome_routing_key(channel: str) -> str:
        return f"outcome.{channel}"

    def work_queue_arguments(self, channel: str) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_SAFE_DEAD_LETTERING,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": channel,
            "x-delivery-limit": DELIVERY_LIMIT,
        }

    def outcomes_queue_arguments(self) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_SAFE_DEAD_LETTERING,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": "outcomes",
            "x-delivery-limit": DELIVERY_LIMIT,
        }

    @staticmethod
    def dead_letter_queue_arguments() -> dict[str, Any]:
        return dict(_QUORUM)

    def retry_queue_arguments(self, channel: str, delay: float) -> dict[str, Any]:
        # Expired messages go through the default exchange straight to the work queue.
        return {
            **_QUORUM,
            **_SAFE_DEAD_LETTERING,
            "x-message-ttl": round(delay * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.work_queue(channel),
        }

    def queue_names(self, retry_policies: dict[str, RetryPolicy] | None = None) -> list[str]:
        names = [self.outcomes_queue, self.outcomes_dead_letter_queue]
        for channel in self.channels:
            names += [self.work_queue(channel), self.dead_letter_queue(channel)]
        for channel, policy in (retry_policies or {}).items():
            names += [self.retry_queue(channel, d) for d in policy.tier_delays()]
        return names

    def exchange_names(self) -> list[str]:
        return [self.notifications_exchange, self.dead_letter_exchange, self.events_exchange]

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
        for name in self.channels:
            work = await channel.declare_queue(
                self.work_queue(name), durable=True, arguments=self.work_queue_arguments(name)
            )
            await work.bind(notifications, routing_key=f"{name}.#")
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
        await outcomes_dead.bind(dead_letters, routing_key="outcomes")

    async def declare_retry_tiers(
        self, channel: AbstractChannel, channel_name: str, policy: RetryPolicy
    ) -> None:
        for delay in policy.tier_delays():
            await channel.declare_queue(
                self.retry_queue(channel_name, delay),
                durable=True,
                arguments=self.retry_queue_arguments(channel_name, delay),
            )

    async def delete(
        self, channel: AbstractChannel, retry_policies: dict[str, RetryPolicy]
    ) -> None:
        """Remove everything of this namespace (test runs clean up after themselves)."""
        for name in self.queue_names(retry_policies):
            await channel.queue_delete(name)
        for name in self.exchange_names():
            await channel.exchange_delete(name)
