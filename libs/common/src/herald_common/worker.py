"""The channel-worker runtime: everything a channel service does except talking to its provider.

For each delivery on the channel's work queue:

1. parse and validate it (a malformed message is dead-lettered with the reason, then acked);
2. claim the attempt in the ledger (skip, replay or send; see ``ledger``);
3. call the provider, bounded by a timeout;
4. record the attempt's result in the ledger;
5. act on it: nothing more when sent, a confirmed republish into the retry tier when transient
   and the budget allows, a confirmed publish to the dead-letter exchange otherwise;
6. publish the outcome event (batched with other deliveries' outcomes, confirmed);
7. ack.

A crash anywhere before 7 redelivers the message and the ledger makes the redelivery do only
what is still missing. Infrastructure failures (PostgreSQL or the broker) leave the message
unacked and requeue it after a backoff; only the provider's errors decide retry or dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError
from prometheus_client import CollectorRegistry

from . import ledger, tracing
from .amqp import Publisher
from .backoff import Backoff
from .batching import Batcher
from .breaker import CircuitBreaker
from .channels import providers_for, queue_keys
from .db import is_bad_data, is_outage
from .disposition import dispose
from .errors import (
    MalformedMessage,
    PermanentError,
    PublishError,
    TransientError,
    UnroutableError,
)
from .metrics import WorkerMetrics
from .providers import (
    Permit,
    Provider,
    ProviderHandle,
    ProviderLimits,
    Receipt,
    default_limits,
)
from .ratelimit import ConsumerCountSource, SharedRateLimiter
from .schemas import (
    AttemptOutcome,
    AttemptResult,
    Delivery,
    Disposition,
    Headers,
    OutcomeBatch,
    parse_delivery,
)
from .settings import RetryPolicy, WorkerSettings
from .text import safe_text
from .topology import DELAY_QUEUE_HEADER, LANES, Topology

__all__ = ["ChannelWorker", "Provider", "Receipt"]  # Provider and Receipt: for providers

log = structlog.get_logger("herald.worker")
T = TypeVar("T")

MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class _Attempt:
    delivery: Delivery
    number: int
    first_number: int
    started_at: datetime
    possible_duplicate: bool


@dataclass(frozen=True)
class _Copy:
    """One delivery of a message: what arrived, from which work queue, and what it says."""

    message: AbstractIncomingMessage
    headers: dict[str, Any]
    queue_key: str
    lane: str
    delivery: Delivery
    number: int
    first_number: int


@dataclass(frozen=True)
class _Result:
    """What one provider call came to (or the result another delivery recorded first)."""

    result: AttemptResult
    error: str | None
    provider: str | None
    provider_message_id: str | None = None
    finished_at: datetime | None = None
    retry_after: float | None = None
    maybe_delivered: bool = False
    segments: int | None = None
    failed_over_after_maybe: bool = False
    """Another provider was tried after one that may have delivered: a possible duplicate."""

    @classmethod
    def stored(cls, stored: ledger.StoredResult) -> _Result:
        return cls(stored.result, stored.error, stored.provider, stored.provider_message_id,
                   stored.finished_at, maybe_delivered=stored.maybe_delivered)  # fmt: skip


class _Admission:
    """``ChannelWorker._admitted``: a class, not a generator, as it runs once per delivery."""

    __slots__ = ("_handle", "_lane", "_message", "_slot", "_worker")

    def __init__(
        self,
        worker: ChannelWorker,
        handle: ProviderHandle,
        lane: str,
        message: AbstractIncomingMessage | None,
    ) -> None:
        self._worker, self._handle, self._lane, self._message = worker, handle, lane, message
        self._slot: contextlib.AbstractAsyncContextManager[object] | None = None

    async def __aenter__(self) -> None:
        gate, message, worker = self._handle.gate, self._message, self._worker
        await gate.acquire(self._lane)
        try:
            if message is not None and (worker.stopping or worker.paused or _channel_lost(message)):
                return
            slot = self._handle.provider.slot()
            await slot.__aenter__()
            self._slot = slot
            try:
                await worker._await_rate(self._handle)
            except BaseException:
                self._slot = None
                await slot.__aexit__(*sys.exc_info())
                raise
        finally:
            gate.release()

    async def __aexit__(self, *exc_info: Any) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            await slot.__aexit__(*exc_info)


class _InfrastructureError(Exception):
    """PostgreSQL or the broker failed under a delivery: requeue it, decide nothing."""


class _PausedByOperator(Exception):
    """The channel was paused before this delivery claimed its attempt: requeue it now."""


def _header_int(headers: dict[str, Any], name: str, default: int) -> int:
    value = headers.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedMessage(f"header {name} is not an integer: {value!r}") from None


def _truncate(text: str) -> str:
    """Provider text made safe to store (no NUL, no lone surrogates) and bounded."""
    text = safe_text(text)
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


LEASE_RECHECK_SECONDS = 1.0
"""How often (with jitter) a copy waiting on another delivery's lease looks at the attempt."""


class ChannelWorker:
    """Consumes a channel's work queues and delivers through its providers, in order: a
    transient failure (or an open breaker) moves the attempt to the next provider that serves
    the queue (``channels.providers_for``)."""

    def __init__(
        self,
        *,
        channel: str,
        settings: WorkerSettings,
        retry_policy: RetryPolicy,
        providers: Sequence[Provider[Any]],
        connection: AbstractRobustConnection,
        pool: asyncpg.Pool[Any],
        registry: CollectorRegistry,
        limits: Callable[[str], ProviderLimits] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.channel = channel
        self._settings = settings
        self._policy = retry_policy
        self._metrics = WorkerMetrics.create(registry)
        self._metrics.start(channel, [p.name for p in providers], queue_keys(channel))
        # One event per work queue: a breaker change wakes the watcher of every queue it serves.
        self._breakers_changed: dict[str, asyncio.Event] = {
            key: asyncio.Event() for key in queue_keys(channel)
        }
        self._holding: dict[str, int] = dict.fromkeys(queue_keys(channel), 0)
        """Deliveries of each queue held while every provider's breaker is open."""
        self._queues: dict[tuple[str, str], AbstractQueue] = {}
        handles = [self._handle_for(p, limits) for p in providers]
        self._routes: dict[str, list[ProviderHandle]] = {}
        for key in queue_keys(channel):
            names = providers_for(key, [h.name for h in handles])
            self._routes[key] = [h for h in handles if h.name in names]
        self._counts: list[ConsumerCountSource] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._connection = connection
        self._pool = pool
        self._clock = clock
        self._topology = Topology(settings.namespace)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._active: dict[tuple[Any, int], asyncio.Task[Any]] = {}
        self._stopping = asyncio.Event()
        self._operator_paused = False
        self._sent = 0
        self._consume_channel: AbstractChannel | None = None
        self._consumers: dict[tuple[str, str], tuple[AbstractQueue, str]] = {}
        """By (work queue key, lane): the consumer of each lane's queue."""
        self._publisher: Publisher | None = None
        self._claims: Batcher[ledger.Claim, ledger.ClaimDecision] | None = None
        self._results: Batcher[ledger.RecordedResult, ledger.StoredResult | None] | None = None
        self._outcomes: Batcher[AttemptOutcome, None] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A start the broker interrupted is retried by the service: leave nothing behind.
            await self._release()
            raise

    async def _declare(self) -> None:
        channel = await self._connection.channel()
        try:
            await self._topology.declare(channel)
            await self._topology.declare_retry_tiers(channel, self.channel, self._policy)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _start(self) -> None:
        await self._declare()

        self._publisher = await Publisher.open(self._connection, self._settings.publish_timeout)
        # A batch failing for its data (not an outage) is split to isolate the item; only that
        # delivery fails, and it is dead-lettered, while the rest of the batch goes on.
        self._claims = Batcher(
            lambda items: ledger.claim(self._pool, items), max_size=500, isolate=is_bad_data
        )
        self._results = Batcher(
            lambda items: ledger.record(self._pool, items), max_size=500, isolate=is_bad_data
        )
        self._outcomes = Batcher(self._publish_outcomes, max_size=500)

        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=self._settings.prefetch)
        # Rate limits before the first consumer: the first prefetch is throttled too.
        await self._start_rate_limits()
        for key, route in self._routes.items():
            if not route:
                # No configured provider serves this queue (e.g. HERALD_PUSH_PROVIDERS=fcm and a
                # Web Push recipient): its messages wait in it until one is configured.
                log.warning("no provider serves this queue; not consuming it",
                            queue=self._topology.work_queue(key))  # fmt: skip
                continue
            names = [h.name for h in route]
            if self._operator_paused:
                # Started while an operator has the channel paused: stays paused until resumed.
                log.warning("channel paused by an operator; not consuming",
                            queues=self._topology.lane_queues(key))  # fmt: skip
            else:
                await self._consume(key)
                log.info("consuming", queues=self._topology.lane_queues(key),
                         prefetch=self._settings.prefetch, providers=names)  # fmt: skip
            self._watchers.append(asyncio.create_task(self._watch_breakers(key)))

    async def stop(self) -> None:
        """Stop consuming, let in-flight deliveries finish (bounded), then close."""
        self._stopping.set()
        for watcher in self._watchers:
            watcher.cancel()  # before the consumers: a watcher must not resume one after this
        for queue, tag in list(self._consumers.values()):
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        if self._in_flight:
            log.info("draining", in_flight=len(self._in_flight))
            _, pending = await asyncio.wait(
                set(self._in_flight), timeout=self._settings.shutdown_timeout
            )
            for task in pending:
                task.cancel()
            if pending:
                log.warning("abandoned in-flight deliveries; they will be redelivered",
                            count=len(pending))  # fmt: skip
        await self._release()

    async def _release(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        self._watchers = []
        for source in self._counts:
            await source.stop()
        self._counts = []
        for batcher in (self._claims, self._results, self._outcomes):
            if batcher is not None:
                await batcher.close()
        if self._consume_channel is not None and not self._consume_channel.is_closed:
            with contextlib.suppress(Exception):
                await self._consume_channel.close()
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.close()
        self._claims = self._results = self._outcomes = None
        self._consume_channel = self._publisher = None
        self._consumers = {}
        self._queues = {}

    # -- providers: breakers, rate limits, pausing a queue ---------------------------------------

    def _handle_for(
        self, provider: Provider[Any], limits: Callable[[str], ProviderLimits] | None
    ) -> ProviderHandle:
        chosen = limits(provider.name) if limits else default_limits(self._settings)
        gauge = self._metrics.breaker_open.labels(self.channel, provider.name)
        gauge.set(0)

        def changed(old: str, new: str) -> None:
            gauge.set({"open": 1.0, "half_open": 0.5}.get(new, 0.0))
            log.warning("provider breaker", provider=provider.name, state=new, was=old)
            for key, route in self._routes.items():
                if any(h.name == provider.name for h in route):
                    self._breakers_changed[key].set()

        breaker = CircuitBreaker(
            chosen.breaker_failure_threshold,
            chosen.breaker_window,
            chosen.breaker_cooldown,
            name=provider.name,
            on_change=changed,
        )
        return ProviderHandle(provider.name, provider, chosen, breaker=breaker)

    async def _start_rate_limits(self) -> None:
        """A provider's rate limit is its account's, for all instances together: each takes
        its share, the limit divided by the live consumers of the queues it serves."""
        for handle in {h.name: h for route in self._routes.values() for h in route}.values():
            rate = handle.limits.rate_limit
            if rate is None:
                continue
            # Every lane's queue: the source takes the largest count (each instance consumes
            # every lane), so an instance whose consumer on one lane is briefly gone still counts.
            queues = [
                name
                for key, route in self._routes.items()
                if handle in route
                for name in self._topology.lane_queues(key)
            ]
            source = ConsumerCountSource(self._connection, queues)
            await source.start()
            self._counts.append(source)
            handle.limiter = SharedRateLimiter(rate, handle.limits.rate_burst, source)

    async def _consume(self, key: str) -> None:
        """Consume every lane's queue of ``key`` (each consumer has its own prefetch window)."""
        assert self._consume_channel is not None
        for lane in LANES:
            queue = self._queues.get((key, lane))
            if queue is None:
                # Declared once: the robust channel re-declares each queue object it has on every
                # reconnect, so a pause and resume re-consumes on this one rather than adding more.
                queue = await self._consume_channel.declare_queue(
                    self._topology.work_queue(key, lane),
                    durable=True,
                    arguments=self._topology.work_queue_arguments(key),
                )
                self._queues[(key, lane)] = queue
            tag = await queue.consume(functools.partial(self._on_message, key, lane))
            self._consumers[(key, lane)] = (queue, tag)

    def _consuming_all(self, key: str) -> bool:
        return all((key, lane) in self._consumers for lane in LANES)

    async def _cancel_consumers(self, key: str) -> None:
        for lane in LANES:
            consumer = self._consumers.pop((key, lane), None)
            if consumer is not None:
                queue, tag = consumer
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)

    async def _watch_breakers(self, key: str) -> None:
        """Consume a queue's lanes or not, as the operator's pause and the breakers say.

        While every provider a queue can use has its breaker open, consume nothing from it:
        messages wait in the broker, no attempt is burned. Resume once a breaker lets a trial in
        and no delivery of the queue is still held (those take the trials first), so that a
        provider still down costs no more than the deliveries already held. While an operator
        has paused the channel (``set_paused``), consume nothing whatever the breakers say."""
        route = self._routes[key]
        changed = self._breakers_changed[key]
        queues = self._topology.lane_queues(key)
        while not self._stopping.is_set():
            try:
                await changed.wait()
                changed.clear()
                if self._operator_paused:
                    await self._cancel_consumers(key)
                    continue
                if not self._consuming_all(key):
                    # Resumed by the operator, or a pause or resume that failed halfway (a
                    # broker blip): its lanes are consumed again whatever the breakers say; if
                    # they are all still open, the next check below pauses them once more.
                    await self._cancel_consumers(key)
                    await self._consume(key)
                    self._metrics.queue_paused.labels(self.channel, key).set(0)
                    log.info("queues consumed", queues=queues)
                if not all(h.open for h in route):
                    continue
                await self._cancel_consumers(key)
                log.warning("every provider's breaker is open; queues paused", queues=queues)
                self._metrics.queue_paused.labels(self.channel, key).set(1)
                await self._until_resumable(key, route)
                if self._stopping.is_set():
                    return
                self._metrics.queue_paused.labels(self.channel, key).set(0)
                if self._operator_paused:
                    continue  # the operator's resume consumes them again
                await self._consume(key)
                log.info("a provider's breaker lets calls through; queues resumed",
                         queues=queues)  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broker blip while pausing or resuming: try again shortly; never leave a
                # queue paused for good because a watcher died.
                log.exception("pausing or resuming a queue failed; trying again", queues=queues)
                changed.set()
                await self._stopped_within(1.0)

    # -- an operator's pause, and what the heartbeat reports ------------------------------------

    @property
    def paused(self) -> bool:
        return self._operator_paused

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) consuming every queue of the channel; deliveries already taken
        finish. Before ``start``, it decides whether ``start`` consumes at all."""
        if paused == self._operator_paused:
            return
        self._operator_paused = paused
        self._metrics.channel_paused.labels(self.channel).set(1 if paused else 0)
        log.warning("channel paused by an operator" if paused else "channel resumed by an operator")
        for event in self._breakers_changed.values():
            event.set()

    @property
    def in_flight(self) -> int:
        """Deliveries being worked on now."""
        return len(self._in_flight)

    @property
    def sent(self) -> int:
        """Deliveries this instance has concluded as sent since it started."""
        return self._sent

    def breaker_states(self) -> dict[str, str]:
        """Each provider's breaker state (closed, half_open, open), for the heartbeat."""
        return {
            h.name: h.breaker.state
            for route in self._routes.values()
            for h in route
            if h.breaker is not None
        }

    def retry_queues(self) -> list[str]:
        """The retry-tier queues of this channel's work queues."""
        return [
            self._topology.retry_queue(key, delay)
            for key in queue_keys(self.channel)
            for delay in self._policy.tier_delays()
        ]

    async def _until_resumable(self, key: str, route: list[ProviderHandle]) -> None:
        while not self._stopping.is_set():
            waits = [
                asyncio.ensure_future(h.breaker.wait_until_trial()) for h in route if h.breaker
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            while self._holding[key] and not all(h.open for h in route):
                if await self._stopped_within(0.2):
                    return
            if not all(h.open for h in route):
                return

    # -- per delivery ---------------------------------------------------------------------------

    async def _on_message(
        self, queue_key: str, lane: str, message: AbstractIncomingMessage
    ) -> None:
        if self._stopping.is_set():
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        # aiormq cancels consumer callbacks when their channel closes (a broker blip). A send in
        # progress must not be cut off by that: it runs in a task of ours, which finishes and
        # records its result, so the redelivered copy replays it instead of sending again.
        task = asyncio.create_task(self._process(queue_key, lane, message))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        await asyncio.shield(task)

    async def _process(self, queue_key: str, lane: str, message: AbstractIncomingMessage) -> None:
        self._metrics.in_flight.labels(self.channel).inc()
        try:
            await self._handle(queue_key, lane, message)
        except _InfrastructureError as exc:
            log.warning("requeueing after infrastructure failure", error=str(exc.__cause__ or exc))
            await self._requeue_later(message)
        except _PausedByOperator:
            # Not claimed yet: back to its queue at once, for the instances to take on resume.
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        except asyncio.CancelledError:
            # Shutdown gave up on it: leave it unacked, the broker redelivers it.
            raise
        except Exception as exc:
            # Not an outage (those are retried in place) and not the provider (that decides a
            # retry or a dead letter): bad data or a bug, which would fail the same way on every
            # redelivery. Dead-letter it with the reason instead of nacking it in a loop (RabbitMQ
            # 4.3 no longer counts such requeues towards the delivery limit).
            log.exception("unexpected error handling a delivery; dead-lettering it")
            try:
                await self._dead_letter(
                    message.body, message.headers or {}, "handler_error",
                    f"{type(exc).__name__}: {exc}", message,
                )  # fmt: skip
                await _ack(message)
            except Exception:
                log.exception("could not dead-letter the delivery; requeueing it")
                await self._requeue_later(message)
        finally:
            self._metrics.in_flight.labels(self.channel).dec()
            structlog.contextvars.unbind_contextvars(
                "notification_id", "campaign_id", "correlation_id", "attempt", "traceparent"
            )

    async def _requeue_later(self, message: AbstractIncomingMessage) -> None:
        redeliveries = _header_int_or(message.headers or {}, "x-delivery-count", 0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=min(2.0**redeliveries, 30.0))
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)

    async def _handle(self, queue_key: str, lane: str, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        try:
            delivery = parse_delivery(message.body, self.channel)
            number = _header_int(headers, Headers.ATTEMPT, 1)
            first_number = _header_int(headers, Headers.FIRST_ATTEMPT, 1)
        except MalformedMessage as exc:
            log.warning("dead-lettering a malformed message", reason=str(exc))
            await self._dead_letter(message.body, headers, "malformed", str(exc), message)
            await _ack(message)
            return
        traceparent = _traceparent(headers)
        structlog.contextvars.bind_contextvars(
            notification_id=str(delivery.id),
            campaign_id=headers.get(Headers.CAMPAIGN_ID),
            correlation_id=delivery.correlation_id or message.correlation_id,
            attempt=number,
            traceparent=traceparent,
        )
        if not tracing.enabled():
            await self._handle_parsed(
                _Copy(message, headers, queue_key, lane, delivery, number, first_number)
            )
            return
        with tracing.span(
            f"deliver {self.channel}",
            traceparent=traceparent,
            kind=tracing.SpanKind.CONSUMER,
            attributes={
                "herald.notification_id": str(delivery.id),
                "herald.channel": self.channel,
                "herald.attempt": number,
                "herald.lane": lane,
            },
        ):
            await self._handle_parsed(
                _Copy(message, headers, queue_key, lane, delivery, number, first_number)
            )

    async def _handle_parsed(self, copy: _Copy) -> None:
        delivery, number = copy.delivery, copy.number
        key = (delivery.id, number)
        earlier = self._active.get(key)
        if earlier is not None:
            # A redelivery (after a lost channel) of a delivery this process is still working on:
            # let that one finish, so this copy replays its result instead of sending again.
            await asyncio.wait({earlier}, timeout=self._settings.shutdown_timeout)
        self._active[key] = asyncio.current_task()  # type: ignore[assignment]
        try:
            await self._handle_claimed(copy)
        finally:
            if self._active.get(key) is asyncio.current_task():
                del self._active[key]

    async def _handle_claimed(self, copy: _Copy) -> None:
        message, delivery, number = copy.message, copy.delivery, copy.number
        route = self._routes[copy.queue_key]
        token = uuid.uuid4()
        hops: list[tuple[str, str]] = []
        while True:
            picked = await self._first_open(copy, route)
            if picked is None:
                return  # its channel closed while it was held: the redelivery does the work
            handle, permit, skipped = picked
            called = False
            try:
                # The provider's slot (and rate token) is taken before the claim, so the lease
                # (claim + provider call + record) never runs while the delivery queues for them.
                async with self._admitted(handle, copy.lane, message):
                    if self._stopping.is_set():
                        # Draining: what has not been claimed yet is left to the redelivery.
                        raise _InfrastructureError("stopping before the claim")
                    if self._operator_paused:
                        raise _PausedByOperator
                    if _channel_lost(message):
                        # Its channel closed while it queued for the slot: the broker has
                        # already redelivered this message, and that copy does the work.
                        # Claiming here would only race it.
                        log.debug("channel lost before the claim; leaving it to the redelivery")
                        return
                    claim = ledger.Claim(
                        delivery.id,
                        number,
                        bool(message.redelivered),
                        handle.name,
                        token=token,
                        lease_seconds=self._lease_seconds(handle),
                        possible_duplicate=_header_flag(copy.headers, Headers.MAYBE_DELIVERED),
                        first_attempt=copy.first_number,
                    )
                    decision = await self._infra(
                        functools.partial(self._claims_batcher.submit, claim)
                    )
                    if decision.action == "send":
                        hops = [(name, "breaker open") for name in skipped]
                        called = True
                        outcome = await self._call(handle, delivery)
            finally:
                if not called:
                    handle.release(permit)
            if decision.action != "wait":
                break
            # Another delivery holds a live lease on this attempt (the original, on a replica
            # whose channel dropped): wait for its result without nacking, then replay it.
            log.debug("attempt leased elsewhere; waiting", until=str(decision.wait_until))
            await self._await_lease(delivery.id, number)

        if decision.action == "skip":
            log.info("skipping delivery", why=decision.why)
            self._metrics.skipped.labels(self.channel).inc()
            await _ack(message)
            return
        if decision.action == "unknown":
            await self._dead_letter(
                message.body, copy.headers, "unknown_notification", decision.why, message
            )
            await _ack(message)
            return
        if decision.action == "replay":
            assert decision.stored is not None
            stored = decision.stored
            attempt = _Attempt(delivery, number, copy.first_number, stored.started_at,
                               stored.possible_duplicate)  # fmt: skip
            log.info("replaying a recorded result", result=stored.result)
            await self._conclude(copy, attempt, _Result.stored(stored))
            return

        assert decision.started_at is not None
        attempt = _Attempt(delivery, number, copy.first_number, decision.started_at,
                           decision.possible_duplicate)  # fmt: skip
        failed_over = await self._fail_over(copy, route, handle, token, outcome, hops)
        if failed_over is None:
            # Another delivery took the attempt over while this one moved between providers:
            # its result will be the one on record. This copy is done.
            await _ack(message)
            return
        outcome = failed_over
        if outcome.failed_over_after_maybe:
            # A provider may have taken the message before the next one sent it again.
            attempt = replace(attempt, possible_duplicate=True)
        finished_at = self._clock()
        # From here on the provider has answered and its answer is only in memory: whatever
        # fails is retried in place until it is recorded (see ``_infra``), never dead-lettered.
        earlier = await self._infra(
            lambda: self._results_batcher.submit(
                ledger.RecordedResult(
                    delivery.id, number, outcome.result, outcome.error, outcome.provider,
                    outcome.provider_message_id, finished_at, outcome.maybe_delivered,
                    tuple(hops), outcome.segments,
                )
            ),
            after_send=True,
        )  # fmt: skip
        if earlier is not None:
            # Our lease ran out and another delivery took the attempt over and finished it
            # first: its result is the one on record, so conclude with that one. If ours was
            # sent, the recipient has it: a retry of the recorded failure is a possible duplicate.
            log.warning("attempt was finished by another delivery; replaying its result",
                        ours=outcome.result, recorded=earlier.result)  # fmt: skip
            recorded = _Result.stored(earlier)
            if outcome.result == "sent":
                recorded = replace(recorded, maybe_delivered=True)
            await self._conclude(copy, attempt, recorded, after_send=True)
            return
        await self._conclude(copy, attempt, replace(outcome, finished_at=finished_at),
                             after_send=True, fresh=True)  # fmt: skip

    async def _fail_over(
        self,
        copy: _Copy,
        route: list[ProviderHandle],
        handle: ProviderHandle,
        token: uuid.UUID,
        outcome: _Result,
        hops: list[tuple[str, str]],
    ) -> _Result | None:
        """After a transient failure, try the route's next providers in order (skipping open
        breakers), renewing the lease for each; ``hops`` collects why each was left. A failure
        that may have reached the recipient marks the attempt a possible duplicate once another
        provider is tried. None when the lease was lost to another delivery meanwhile."""
        maybe_delivered = outcome.maybe_delivered
        marked = False
        for following in route[route.index(handle) + 1 :]:
            if outcome.result != "transient_failure":
                break
            permit = following.permit()
            if permit is None:
                hops.append((following.name, "breaker open"))
                continue
            hops.append((handle.name, outcome.error or "transient failure"))
            called = False
            try:
                async with self._admitted(following, copy.lane):
                    renew = functools.partial(
                        ledger.renew, self._pool, copy.delivery.id, copy.number, token,
                        following.name, self._lease_seconds(following),
                        possible_duplicate=maybe_delivered,
                    )  # fmt: skip
                    if not await self._infra(renew, after_send=True):
                        return None
                    log.info("failing over", from_provider=handle.name,
                             to_provider=following.name, error=outcome.error)  # fmt: skip
                    self._metrics.failovers.labels(self.channel, handle.name,
                                                   following.name).inc()  # fmt: skip
                    marked = marked or maybe_delivered
                    called = True
                    handle, outcome = following, await self._call(following, copy.delivery)
            finally:
                if not called:
                    following.release(permit)
            maybe_delivered = maybe_delivered or outcome.maybe_delivered
        if len(hops) and outcome.result == "transient_failure":
            # Every provider failed: the error names them all.
            tried = "; ".join(f"{name}: {error}" for name, error in hops)
            outcome = replace(outcome, error=_truncate(f"{tried}; {handle.name}: {outcome.error}"))
        return replace(outcome, maybe_delivered=maybe_delivered, failed_over_after_maybe=marked)

    async def _first_open(
        self, copy: _Copy, route: list[ProviderHandle]
    ) -> tuple[ProviderHandle, Permit, list[str]] | None:
        """The first provider of ``route`` whose breaker lets a call through, its permit, and
        the names of those skipped before it. While every breaker is open the delivery is held
        here (not nacked, no attempt burned) until one lets a trial through; None when its
        channel closed meanwhile (the broker has redelivered it)."""
        held = False
        try:
            while True:
                skipped: list[str] = []
                for handle in route:
                    permit = handle.permit()
                    if permit is not None:
                        return handle, permit, skipped
                    skipped.append(handle.name)
                if _channel_lost(copy.message):
                    return None
                if self._operator_paused:
                    raise _PausedByOperator
                if not held:
                    held = True
                    self._holding[copy.queue_key] += 1
                wait = min(h.retry_in() for h in route)
                if await self._stopped_within(max(wait, 0.05)):
                    raise _InfrastructureError("stopping while every provider's breaker is open")
        finally:
            if held:
                self._holding[copy.queue_key] -= 1

    def _admitted(
        self,
        handle: ProviderHandle,
        lane: str,
        message: AbstractIncomingMessage | None = None,
    ) -> _Admission:
        """Inside the provider's slot with a rate token, taken in lane order (``LaneGate``):
        the high lane's deliveries first.

        With ``message``, a delivery that is abandoned by the time its turn comes (the service
        is stopping, or its channel closed and the broker redelivered it) takes neither slot
        nor token: the caller checks the same two things first thing inside and gives up, and
        a token spent on it would be a send lost to the rate limit.
        """
        return _Admission(self, handle, lane, message)

    async def _await_rate(self, handle: ProviderHandle) -> None:
        waited = await handle.acquire_rate()
        if waited:
            self._metrics.rate_limit_wait.labels(self.channel, handle.name).observe(waited)

    def _lease_seconds(self, handle: ProviderHandle) -> float:
        return handle.limits.timeout + self._settings.lease_margin

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    async def _await_lease(self, notification_id: uuid.UUID, attempt: int) -> None:
        """Wait until the attempt has a result or its lease ran out (cheap reads, no lock and no
        provider slot held meanwhile); the caller then claims again."""
        while True:
            if await self._stopped_within(LEASE_RECHECK_SECONDS * random.uniform(0.75, 1.25)):
                raise _InfrastructureError("stopping while waiting for a leased attempt")
            if await self._infra(
                lambda: ledger.lease_settled(self._pool, notification_id, attempt)
            ):
                return

    async def _call(self, handle: ProviderHandle, delivery: Delivery) -> _Result:
        """Call one provider (inside its slot), bounded by its timeout; feed its breaker."""
        if tracing.enabled():
            with tracing.span(f"{handle.name} send", kind=tracing.SpanKind.CLIENT,
                              attributes={"herald.provider": handle.name}):  # fmt: skip
                return await self._call_provider(handle, delivery)
        return await self._call_provider(handle, delivery)

    async def _call_provider(self, handle: ProviderHandle, delivery: Delivery) -> _Result:
        provider, timeout = handle.name, handle.limits.timeout
        fault = True
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(timeout):
                receipt = await handle.provider.send(delivery)
        except TransientError as exc:
            outcome = _Result("transient_failure", _truncate(str(exc)), exc.provider or provider,
                              retry_after=exc.retry_after,
                              maybe_delivered=exc.maybe_delivered)  # fmt: skip
            fault = exc.provider_fault
        except PermanentError as exc:
            outcome = _Result("permanent_failure", _truncate(str(exc)), exc.provider or provider)
        except TimeoutError:
            # Cut off mid-call: the provider may have taken the message before it was cut.
            outcome = _Result("transient_failure", f"{provider} timed out after {timeout}s",
                              provider, maybe_delivered=True)  # fmt: skip
        except Exception as exc:
            log.exception("provider raised an unexpected error; treating it as transient")
            outcome = _Result("transient_failure", _truncate(f"{type(exc).__name__}: {exc}"),
                              provider)  # fmt: skip
        else:
            message_id = receipt.provider_message_id
            outcome = _Result("sent", None, receipt.provider,
                              None if message_id is None else safe_text(message_id),
                              segments=receipt.segments)  # fmt: skip
        handle.record(outcome.result, provider_fault=fault)
        elapsed = asyncio.get_running_loop().time() - started
        used = outcome.provider or provider
        self._metrics.delivery_seconds.labels(self.channel, used).observe(elapsed)
        self._metrics.deliveries.labels(self.channel, used, outcome.result).inc()
        return outcome

    async def _conclude(
        self,
        copy: _Copy,
        attempt: _Attempt,
        outcome: _Result,
        *,
        after_send: bool = False,
        fresh: bool = False,
    ) -> None:
        """Act on an attempt's result and ack. ``fresh``: the result of this delivery's own
        provider call (counted in this instance's figures), not one replayed from the ledger."""
        message = copy.message
        result, error, provider = outcome.result, outcome.error, outcome.provider
        finished_at = outcome.finished_at or self._clock()
        next_attempt_at: datetime | None = None
        decided = dispose(
            result,
            attempt=attempt.number,
            first_attempt=attempt.first_number,
            policy=self._policy,
            retry_after=outcome.retry_after,
        )
        if decided.kind == "sent":
            self._sent += fresh
            # Debug: a line per sent notification would cost more than the rest of the delivery;
            # the attempt row and the outcome event record it. Failures log at info and above.
            log.debug("sent", provider=provider, possible_duplicate=attempt.possible_duplicate)
        elif decided.kind == "retry":
            assert decided.delay is not None
            delay = decided.delay
            next_attempt_at = finished_at + timedelta(seconds=delay)
            headers = {
                **_own_headers(message.headers or {}),
                Headers.ATTEMPT: attempt.number + 1,
                Headers.FIRST_ATTEMPT: attempt.first_number,
                Headers.LAST_ERROR: error or "",
            }
            headers.pop(Headers.MAYBE_DELIVERED, None)
            if outcome.maybe_delivered:
                headers[Headers.MAYBE_DELIVERED] = 1
            # Into the tier through the delays exchange, with the lane's routing key: the tier
            # dead-letters it back into the notifications exchange under that key, its lane.
            headers[DELAY_QUEUE_HEADER] = self._topology.retry_queue(copy.queue_key, delay)
            await self._infra(
                lambda: self._publisher_.publish(
                    self._topology.delays_exchange,
                    Topology.routing_key(copy.queue_key, copy.lane),
                    message.body,
                    headers=headers,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                ),
                after_send=after_send,
            )
            if fresh:
                self._metrics.retries.labels(self.channel, provider or "unknown").inc()
            log.info("retry scheduled", delay=delay, error=error)
        else:
            assert decided.reason is not None
            await self._dead_letter(message.body, message.headers or {}, decided.reason, error,
                                    message, attempt=attempt.number,
                                    after_send=after_send)  # fmt: skip
        disposition: Disposition = decided.kind
        await self._infra(
            lambda: self._outcomes_batcher.submit(
                AttemptOutcome(
                    notification_id=attempt.delivery.id,
                    channel=self.channel,
                    attempt=attempt.number,
                    result=result,
                    disposition=disposition,
                    provider=provider,
                    provider_message_id=outcome.provider_message_id,
                    error=error,
                    started_at=attempt.started_at,
                    finished_at=finished_at,
                    next_attempt_at=next_attempt_at,
                    possible_duplicate=attempt.possible_duplicate,
                    traceparent=tracing.current_traceparent() or _traceparent(copy.headers),
                    correlation_id=attempt.delivery.correlation_id or message.correlation_id,
                )
            ),
            after_send=after_send,
        )
        await _ack(message)

    async def _dead_letter(
        self,
        body: bytes,
        headers: Any,
        reason: str,
        error: str | None,
        message: AbstractIncomingMessage,
        *,
        attempt: int | None = None,
        after_send: bool = False,
    ) -> None:
        own = _own_headers(headers)
        own.update(
            {
                Headers.DEAD_LETTER_REASON: reason,
                Headers.LAST_ERROR: _truncate(error or ""),
                Headers.DEAD_LETTERED_AT: self._clock().isoformat(),
                Headers.CHANNEL: self.channel,
            }
        )
        if attempt is not None:
            own[Headers.ATTEMPT] = attempt
        await self._infra(
            lambda: self._publisher_.publish(
                self._topology.dead_letter_exchange,
                self.channel,
                body,
                headers=own,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                content_type=message.content_type or "application/octet-stream",
            ),
            after_send=after_send,
        )
        self._metrics.dead_letters.labels(self.channel, reason).inc()
        log.warning("dead-lettered", reason=reason, error=error)

    async def _publish_outcomes(self, outcomes: list[AttemptOutcome]) -> list[None]:
        body = OutcomeBatch(outcomes=outcomes).model_dump_json().encode()
        await self._publisher_.publish(
            self._topology.events_exchange, Topology.outcome_routing_key(self.channel), body
        )
        return [None] * len(outcomes)

    async def _infra(self, step: Callable[[], Awaitable[T]], *, after_send: bool = False) -> T:
        """Run a step that needs PostgreSQL or the broker, retrying it in place while they fail.

        Holding the delivery instead of nacking it keeps an outage from counting towards the
        queue's delivery limit (which would dead-letter notifications that were merely late).
        Only a stop gives up: the delivery stays unacked and is redelivered. Before the send,
        an error that is not an outage goes up (the delivery is dead-lettered with it); after the
        send (``after_send``) every error is retried, since the provider's answer must be
        recorded and acted on, not turned into a failure of a notification that may be sent.
        """
        backoff = Backoff()
        while True:
            try:
                return await step()
            except UnroutableError as exc:
                # The broker lost our queues (a new node, a wiped volume): declare them again.
                failure: Exception = exc
                with contextlib.suppress(Exception):
                    await self._declare()
            except PublishError as exc:
                failure = exc
            except Exception as exc:
                # Only an outage is retried in place; bad data or a bug is not going to change
                # by waiting, and goes up to be dead-lettered with its reason.
                if not (after_send or is_outage(exc)):
                    raise
                if not is_outage(exc):
                    log.error("recording a provider's answer failed; retrying", exc_info=True)
                failure = exc
            if self._stopping.is_set():
                raise _InfrastructureError(str(failure)) from failure
            log.warning("infrastructure failing; retrying", error=str(failure),
                        retry_in=backoff.delay)  # fmt: skip
            await backoff.wait(self._stopping)

    @property
    def _publisher_(self) -> Publisher:
        assert self._publisher is not None
        return self._publisher

    @property
    def _claims_batcher(self) -> Batcher[ledger.Claim, ledger.ClaimDecision]:
        assert self._claims is not None
        return self._claims

    @property
    def _results_batcher(self) -> Batcher[ledger.RecordedResult, ledger.StoredResult | None]:
        assert self._results is not None
        return self._results

    @property
    def _outcomes_batcher(self) -> Batcher[AttemptOutcome, None]:
        assert self._outcomes is not None
        return self._outcomes


def _own_headers(headers: Any) -> dict[str, Any]:
    """Headers to carry on a republish: ours, never the broker's ``x-`` ones (see topology)."""
    return {k: v for k, v in dict(headers).items() if not str(k).startswith("x-")}


def _header_int_or(headers: Any, name: str, default: int) -> int:
    try:
        return int(dict(headers).get(name, default))
    except (TypeError, ValueError):
        return default


def _traceparent(headers: dict[str, Any]) -> str | None:
    value = headers.get(Headers.TRACEPARENT)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) and len(value) <= 128 else None


def _header_flag(headers: Any, name: str) -> bool:
    value = dict(headers).get(name)
    return value not in (None, 0, "0", "", False, b"", b"0")


async def _ack(message: AbstractIncomingMessage) -> None:
    """Ack, accepting that the channel may be gone: the broker then redelivers the message, and
    the ledger turns the redelivery into a replay (or a skip), never a second send."""
    try:
        await message.ack()
    except Exception as exc:
        log.info("ack failed; the message will be redelivered and replayed", error=repr(exc))


def _channel_lost(message: AbstractIncomingMessage) -> bool:
    try:
        return bool(message.channel.is_closed)
    except ChannelInvalidStateError:
        return True
