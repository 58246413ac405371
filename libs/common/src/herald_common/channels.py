"""The channel registry: which channels exist, and which work queues each one has.

Every other place derives from here: the topology declares a work queue (with its retry tiers)
per queue key and a dead-letter queue per channel, the API routes each notification by
``queue_key``, and a channel service consumes its channel's queues.

Email and SMS have one work queue each (``<ns>.email``, ``<ns>.sms``). Push is routed per provider
(``<ns>.push.fcm``, ``<ns>.push.webpush``, routing keys ``push.fcm.*`` and ``push.webpush.*``): the
recipient's kind decides the provider, so a message waiting on one provider's open breaker never
burns attempts and never blocks the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHANNEL_QUEUES: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "sms": ("sms",),
    "push": ("push.fcm", "push.webpush"),
}
"""Each channel's work-queue keys; a queue is ``<ns>.<key>``, bound to ``<key>.#``."""

CHANNELS: tuple[str, ...] = tuple(CHANNEL_QUEUES)

SANDBOX = "sandbox"
"""The development and load-test provider: it serves every queue of every channel."""


def queue_keys(channel: str) -> tuple[str, ...]:
    return CHANNEL_QUEUES[channel]


def channel_of(queue_key: str) -> str:
    return queue_key.split(".", 1)[0]


def queue_key_of(channel: str, to: Any) -> str:
    """The work queue a notification for ``to`` goes to (push: by its provider kind)."""
    keys = CHANNEL_QUEUES[channel]
    if len(keys) == 1:
        return keys[0]
    kind = to.get("provider") if isinstance(to, dict) else getattr(to, "provider", None)
    key = f"{channel}.{kind}"
    if key not in keys:
        raise ValueError(f"no {channel} queue for recipient kind {kind!r}")
    return key


def providers_for(queue_key: str, providers: Sequence[str]) -> tuple[str, ...]:
    """The providers (of ``providers``, in order) that can deliver what ``queue_key`` holds: all
    of them for a channel with one queue; for a per-provider queue its own provider and the
    sandbox (failover applies between providers that serve the same kind of recipient)."""
    _, _, kind = queue_key.partition(".")
    if not kind:
        return tuple(providers)
    return tuple(p for p in providers if p in (kind, SANDBOX))
