"""The small error hierarchy that decides what happens to a delivery.

Providers raise these; the channel-worker runtime turns them into an ack, a retry or a dead letter.
Anything else a provider raises is treated as transient: an unknown failure is retried, never lost.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A provider could not deliver a notification."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class TransientError(DeliveryError):
    """May succeed later (timeouts, refused connections, 429, 5xx, SMTP 4xx): retried on a tier."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        retry_after: float | None = None,
        maybe_delivered: bool = False,
        provider_fault: bool = True,
    ) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered
        self.provider_fault = provider_fault
        """The provider is failing (counts towards its circuit breaker); False when the failure
        is about this one recipient (an SMTP server deferring a mailbox, greylisting), which says
        nothing about the provider's health."""
        """The provider may have accepted the message before failing (e.g. a timeout after the
        SMTP DATA was sent): the retry is then marked ``possible_duplicate``."""


class PermanentError(DeliveryError):
    """Will not succeed however often it is tried (bad recipient, rejected content)."""


class MalformedMessage(Exception):
    """A message on a queue that does not parse or validate: dead-lettered with the reason."""


class PublishError(Exception):
    """A publish the broker did not confirm (nack, timeout, lost connection)."""


class UnroutableError(PublishError):
    """The broker returned a mandatory publish: no queue is bound for its routing key."""
