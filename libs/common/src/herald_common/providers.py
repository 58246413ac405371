"""What a provider is to the runtime, and how the runtime holds one: its limits, its circuit
breaker and its rate limiter (``ProviderHandle``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .lanes import LaneGate
from .schemas import AttemptResult, DeliveryBase
from .settings import WorkerSettings


@dataclass(frozen=True)
class Receipt:
    """What a provider returns when it accepted a notification."""

    provider: str
    provider_message_id: str | None = None
    segments: int | None = None
    """Billable parts the provider split the message into (SMS), when it says."""


DeliveryT = TypeVar("DeliveryT", bound=DeliveryBase, contravariant=True)


class Provider(Protocol[DeliveryT]):
    """A channel's way out. Raise ``TransientError`` or ``PermanentError``; return a receipt.

    ``slot()`` waits for capacity (a pooled connection, a concurrency limit) and is not timed;
    ``send`` runs inside it, bounded by the provider's timeout, so deliveries queued behind a
    busy pool never time out unsent.
    """

    name: str

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]: ...

    async def send(self, delivery: DeliveryT) -> Receipt: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ProviderLimits:
    """How one provider of a channel is called: its timeout, rate limit and breaker."""

    timeout: float
    rate_limit: float | None = None
    """Messages a second for all instances of the channel service together; None: no limit."""
    rate_burst: int = 1
    breaker_failure_threshold: int = 5
    breaker_window: float = 30.0
    breaker_cooldown: float = 30.0


def default_limits(settings: WorkerSettings) -> ProviderLimits:
    """Limits of a provider whose channel names none: the common timeout, no rate limit."""
    return ProviderLimits(timeout=settings.provider_timeout)


class Breaker(Protocol):
    @property
    def state(self) -> str: ...

    def allow(self) -> bool: ...

    def release(self) -> None: ...

    async def wait_until_trial(self) -> None: ...

    def retry_in(self) -> float: ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...


class RateLimiter(Protocol):
    async def acquire(self) -> float: ...


@dataclass(frozen=True)
class Permit:
    trial: bool
    """This call is the breaker's half-open trial: if it is not made, it must be released."""


@dataclass
class ProviderHandle:
    """A provider as the runtime calls it."""

    name: str
    provider: Provider[Any]
    limits: ProviderLimits
    breaker: Breaker | None = field(default=None)
    limiter: RateLimiter | None = field(default=None)
    gate: LaneGate = field(default_factory=LaneGate)
    """Orders the deliveries waiting for this provider's slot and rate token by lane."""

    def permit(self) -> Permit | None:
        """A permit to call this provider now (its breaker closed, or the one half-open trial),
        or None while its breaker is open."""
        if self.breaker is None:
            return Permit(trial=False)
        # In half-open only one allow() is granted: this caller then holds the trial.
        trial = self.breaker.state == "half_open"
        return Permit(trial=trial) if self.breaker.allow() else None

    def retry_in(self) -> float:
        return 0.0 if self.breaker is None else self.breaker.retry_in()

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call was not made (only a trial needs giving back)."""
        if permit.trial and self.breaker is not None:
            self.breaker.release()

    @property
    def open(self) -> bool:
        return self.breaker is not None and self.breaker.state == "open"

    def record(self, result: AttemptResult, *, provider_fault: bool = True) -> None:
        """Feed the breaker: a transient failure of the provider (timeout, 5xx, 429, connection)
        counts; a permanent one (the recipient, the content) or one about a single recipient
        says nothing about the provider's health, and the provider did answer."""
        if self.breaker is None:
            return
        if result == "transient_failure" and provider_fault:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()

    async def acquire_rate(self) -> float:
        """Wait for the rate limiter; the seconds waited."""
        return 0.0 if self.limiter is None else await self.limiter.acquire()
